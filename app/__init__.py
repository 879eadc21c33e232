"""mailrelay: the mail service of the HRMS."""

__version__ = "0.1.0"
