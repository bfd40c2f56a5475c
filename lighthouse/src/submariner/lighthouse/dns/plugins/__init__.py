"""CoreDNS-compatible plugins: one module each, with `NAME`, `ONCE` and `setup(c)`."""
