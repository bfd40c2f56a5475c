"""The `nettool` image: a pod that just stays up, so `sublab exec` can run dig/nslookup/curl inside it.

Blocks until SIGTERM/SIGINT and exits 0, like `sleep infinity` under a container runtime's stop signal.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    print("nettool: idle; use `sublab exec` to run network tools in this pod", flush=True)
    got = signal.sigwait(stop)
    print(f"nettool: {signal.Signals(got).name}, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
