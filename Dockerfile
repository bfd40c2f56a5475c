# syntax=docker/dockerfile:1
# One image for every component of Submariner in Python: all eight distributions and the kernel tools the
# data plane drives. The last stages only set the entry point, so they share every layer; build the image
# each workload of `subctl join` names (quay.io/submariner/<component>:<tag>) with --target:
#
#   docker build -t submariner-python:0.19.0 .                                      # default: subctl
#   docker build --target submariner-gateway     -t quay.io/submariner/submariner-gateway:0.19.0 .
#   docker build --target submariner-route-agent -t quay.io/submariner/submariner-route-agent:0.19.0 .
#   docker build --target submariner-globalnet   -t quay.io/submariner/submariner-globalnet:0.19.0 .
#   docker build --target lighthouse-agent       -t quay.io/submariner/lighthouse-agent:0.19.0 .
#   docker build --target lighthouse-coredns     -t quay.io/submariner/lighthouse-coredns:0.19.0 .
#   docker build --target submariner-broker      -t submariner-broker:0.19.0 .
#   docker build --target nettest                -t quay.io/submariner/nettest:0.19.0 .
#
# or run any program of the default image with `--entrypoint <console script>`.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip wheel
COPY broker/ broker/
COPY dataplane/ dataplane/
COPY lighthouse/ lighthouse/
COPY gateway/ gateway/
COPY routeagent/ routeagent/
COPY globalnet/ globalnet/
COPY cli/ cli/
COPY lab/ lab/
# Wheels of the eight distributions and of every dependency (resolved together, so versions agree).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels \
      ./broker ./dataplane ./lighthouse ./gateway ./routeagent ./globalnet ./cli ./lab

FROM ${PYTHON_IMAGE} AS base
# The gateway, route agent and Globalnet program links, routes, iptables (nf_tables backend), ipsets and
# WireGuard devices; libreswan provides pluto for the default IPsec cable driver.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 iptables ipset wireguard-tools libreswan ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
      submariner-broker submariner-dataplane submariner-lighthouse submariner-gateway submariner-routeagent \
      submariner-globalnet submariner-cli submariner-lab
ENV PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="submariner-python" \
      org.opencontainers.image.description="Submariner in Python: broker API server, gateway, route agent, Globalnet, Lighthouse agent and DNS, subctl, sublab"

FROM base AS submariner-broker
ENTRYPOINT ["submariner-broker"]
CMD ["serve", "--data-dir", "/var/lib/submariner-broker", "--listen", "0.0.0.0:6443"]

FROM base AS submariner-gateway
ENTRYPOINT ["submariner-gateway"]

FROM base AS submariner-route-agent
ENTRYPOINT ["submariner-routeagent"]

FROM base AS submariner-globalnet
ENTRYPOINT ["submariner-globalnet"]

FROM base AS lighthouse-agent
ENTRYPOINT ["lighthouse-agent"]

FROM base AS lighthouse-coredns
# The Deployment passes `-conf /etc/coredns/Corefile` (the ConfigMap mount), as for CoreDNS.
ENTRYPOINT ["lighthouse-dns"]
EXPOSE 53/udp 53/tcp

FROM base AS sublab
ENTRYPOINT ["sublab"]

# subctl diagnose firewall / benchmark start idle probe pods from this image and run their probes through
# pods/exec as `python3 -c …` (upstream's nettest image has no python3): keep it idle until then.
FROM base AS nettest
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iperf3 \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["sleep", "infinity"]

# Last stage = the default target: subctl.
FROM base AS subctl
ENTRYPOINT ["subctl"]
CMD ["--help"]
