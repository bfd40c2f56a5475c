"""Lighthouse DNS: a CoreDNS-compatible DNS server that answers `clusterset.local` (and, for the lab's
cluster DNS, `cluster.local`). Entry point: `lighthouse-dns -conf COREFILE` (`cli.main`)."""
