"""`/metrics` reports the outbox and mailbox state from the database."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_messages_and_mailboxes(admin: httpx.AsyncClient) -> None:
    await admin.post(
        "/v1/tenants/acme/mailbox", json={"display_name": "Acme", "email": "hr@acme.test"}
    )
    for _ in range(3):
        response = await admin.post(
            "/v1/tenants/acme/messages",
            json={"to": ["a@example.test"], "subject": "s", "text": "t"},
        )
        assert response.status_code == 202
    response = await admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("mailrelay_messages", (("status", "queued"),))] == 3
    assert values[("mailrelay_messages", (("status", "sent"),))] == 0
    assert values[("mailrelay_mailboxes", (("status", "not_configured"),))] == 1
    assert values[("mailrelay_oldest_queued_seconds", ())] >= 0
    assert values[("mailrelay_webhook_events_pending", ())] == 0
