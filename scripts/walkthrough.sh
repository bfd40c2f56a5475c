#!/usr/bin/env bash
# The seed walkthrough (../shared/seed/WALKTHROUGH.md) in the lab, with only `kind` -> `sublab` and the
# `kind-` context prefix -> `lab-` changed. Each step prints the command and what it showed, and checks what the
# article observed; the clusters are deleted at the end (also on failure).
#   scripts/walkthrough.sh            §3 (quick start) and §4 (Globalnet)
#   WALKTHROUGH_ONLY=3 scripts/walkthrough.sh   just §3 (or 4)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$repo/.venv/bin:$PATH"
# A private kubeconfig, lab home and working directory (broker-info.subm lands there), so the walkthrough never
# touches the user's own.
work=$(mktemp -d /tmp/sublab-walkthrough.XXXXXX)
export KUBECONFIG="$work/kubeconfig" SUBLAB_HOME="$work/lab"
cd "$work"
only=${WALKTHROUGH_ONLY:-}
failed=0
clusters=()
t0=$(date +%s)

cleanup() {
  echo "== 5. Clean-up: sublab delete clusters ${clusters[*]:-}"
  [ "${#clusters[@]}" -gt 0 ] && sublab delete clusters "${clusters[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
  echo "   removed the clusters and $work ($(( $(date +%s) - t0 )) s in all)"
}
trap cleanup EXIT

kubectl() { command kubectl --cache-dir "$work/kubectl-cache" "$@"; }
show() { sed 's/^/   | /'; }
check() {  # check DESCRIPTION COMMAND...: run, print, and record the result
  local what=$1; shift
  if out=$("$@" 2>&1); then
    echo " ✓ $what"; printf '%s\n' "$out" | show
  else
    echo " ✗ $what"; printf '%s\n' "$out" | show; failed=1
  fi
}
expect() {  # expect DESCRIPTION PATTERN COMMAND...: like check, and the output must match the extended regex
  local what=$1 pattern=$2; shift 2
  if out=$("$@" 2>&1) && grep -Eq -- "$pattern" <<<"$out"; then
    echo " ✓ $what"; printf '%s\n' "$out" | show
  else
    echo " ✗ $what (expected /$pattern/)"; printf '%s\n' "$out" | show; failed=1
  fi
}
eventually() {  # eventually DESCRIPTION TIMEOUT PATTERN COMMAND...: retry until the output matches (bounded)
  local what=$1 timeout=$2 pattern=$3; shift 3
  local start; start=$(date +%s)
  while true; do
    if out=$("$@" 2>&1) && grep -Eq -- "$pattern" <<<"$out"; then
      echo " ✓ $what ($(( $(date +%s) - start )) s)"; printf '%s\n' "$out" | show; return 0
    fi
    if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
      echo " ✗ $what (not /$pattern/ within $timeout s)"; printf '%s\n' "$out" | show; failed=1; return 0
    fi
    sleep 1
  done
}
create_cluster() {  # create_cluster NAME WORKERS POD_SUBNET SERVICE_SUBNET: the article's Kind config, via stdin
  local name=$1 workers=$2 pods=$3 svcs=$4 nodes="- role: control-plane"
  [ "$workers" -gt 0 ] && nodes+=$'\n- role: worker'
  clusters+=("$name")
  local config
  config=$(printf 'kind: Cluster\nname: %s\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n%s\nnetworking:\n  apiServerAddress: 192.168.1.20\n  podSubnet: "%s"\n  serviceSubnet: "%s"\n' "$name" "$nodes" "$pods" "$svcs")
  local start; start=$(date +%s.%N)
  check "sublab create cluster --config - (name: $name)" sublab create cluster --config - <<<"$config"
  echo "   ($(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
}
all_in() {  # all_in "IP IP..." COMMAND...: the command's output names every one of the IPs
  local ips=$1; shift
  local out; out=$("$@" 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  for ip in $ips; do grep -q "Address: $ip\$" <<<"$out" || return 1; done
  echo "all found"
}
node_rules() {  # node_rules CONTEXT NODE PATTERN: nat rules on a node, read inside its gateway pod (hostNetwork)
  local pod
  pod=$(kubectl --context "$1" -n submariner-operator get pods -l app=submariner-gateway \
        --field-selector "spec.nodeName=$2" -o jsonpath='{.items[0].metadata.name}') || return 1
  kubectl --context "$1" -n submariner-operator exec "$pod" -- iptables-save -t nat | grep -E -- "$3"
}
whereami_from() {  # whereami_from CONTEXT URL: curl from the client pod; prints the answer
  kubectl --context "$1" exec client -- curl -s --max-time 5 "$2"
}
answered_by() {  # answered_by CONTEXT URL NODE_PREFIX SOURCE_REGEX: the answer came from such a node, seen from such a source
  local out; out=$(whereami_from "$1" "$2") || return 1
  echo "$out"
  python3 - "$3" "$4" "$out" <<'PY'
import json, re, sys
node_prefix, source, text = sys.argv[1], sys.argv[2], sys.argv[3]
answer = json.loads(text)
ok = answer["node_name"].startswith(node_prefix) and re.fullmatch(source, answer["source_ip"])
print(f"node_name={answer['node_name']} pod_ip={answer['pod_ip']} source_ip={answer['source_ip']}")
sys.exit(0 if ok else 1)
PY
}

section3() {
echo "== 3.1 Create clusters (sublab create cluster --config -)"
create_cluster broker 0 10.7.0.0/16 10.77.0.0/16
create_cluster c1 1 10.8.0.0/16 10.88.0.0/16
create_cluster c2 1 10.9.0.0/16 10.99.0.0/16
check "sublab get clusters" sublab get clusters
check "kubectl --context lab-c2 get nodes -o wide" kubectl --context lab-c2 get nodes -o wide

echo "== 3.2 Deploy the broker"
check "subctl --context lab-broker deploy-broker" subctl --context lab-broker deploy-broker
expect "broker-info.subm (base64 JSON with brokerURL, ClientToken, IPSecPSK, Components)" \
  '"Components": \[' sh -c 'base64 -d broker-info.subm | python3 -c "import json,sys; d=json.load(sys.stdin); d[\"ClientToken\"]=\"<secret>\"; d[\"IPSecPSK\"]=\"<secret>\"; print(json.dumps(d, indent=1))"'

echo "== 3.3 Join"
check "subctl --context lab-c1 join broker-info.subm --clusterid c1" subctl --context lab-c1 join broker-info.subm --clusterid c1
check "subctl --context lab-c2 join broker-info.subm --clusterid c2" subctl --context lab-c2 join broker-info.subm --clusterid c2

echo "== 3.4 Connections"
eventually "subctl show connections --context lab-c1" 60 "c2-worker +c2 .* connected" subctl show connections --context lab-c1
eventually "subctl show connections --context lab-c2" 60 "c1-worker +c1 .* connected" subctl show connections --context lab-c2
expect "the gateway log shows the tunnel" "connected|established" \
  sh -c 'kubectl --context lab-c1 -n submariner-operator logs ds/submariner-gateway | grep -Ei "cable|connect" | tail -5'

echo "== 3.5 Cross-cluster traffic: namespace sample in both clusters"
check "kubectl --context lab-c2 create namespace sample" kubectl --context lab-c2 create namespace sample
check "kubectl --context lab-c1 create namespace sample" kubectl --context lab-c1 create namespace sample

echo "== 3.5.1 ClusterIP Service"
check "kubectl --context lab-c2 apply -f whereami-cs.yaml (Deployment whereami + Service whereami-cs)" \
  kubectl --context lab-c2 apply -f "$repo/scripts/seed/whereami-cs.yaml"
check "kubectl rollout status deployment/whereami" kubectl --context lab-c2 -n sample rollout status deployment/whereami --timeout=60s
check "kubectl --context lab-c2 get pods,svc -n sample -o wide" kubectl --context lab-c2 get pods,svc -n sample -o wide
check "subctl --context lab-c2 export service --namespace sample whereami-cs" \
  subctl --context lab-c2 export service --namespace sample whereami-cs
eventually "ServiceExport conditions Valid=True, Synced=True" 30 "Synced=True" \
  kubectl --context lab-c2 get serviceexport -n sample whereami-cs -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.message}{"\n"}{end}'
eventually "kubectl --context lab-c1 get serviceimport -n sample" 30 "whereami-cs" kubectl --context lab-c1 get serviceimport -n sample
check "kubectl --context lab-c2 get serviceimport -n sample -o yaml" kubectl --context lab-c2 get serviceimport -n sample -o yaml
check "kubectl --context lab-c1 run client --image=cr7258/nettool:v1" kubectl --context lab-c1 run client --image=cr7258/nettool:v1
check "client Ready" kubectl --context lab-c1 wait --for=condition=Ready pod/client --timeout=60s
c2_ip=$(kubectl --context lab-c2 get svc -n sample whereami-cs -o jsonpath='{.spec.clusterIP}')
client_ip=$(kubectl --context lab-c1 get pod client -o jsonpath='{.status.podIP}')
eventually "from c1: nslookup whereami-cs.sample.svc.clusterset.local → c2's ClusterIP $c2_ip" 30 "Address: ${c2_ip//./\\.}" \
  kubectl --context lab-c1 exec client -- nslookup whereami-cs.sample.svc.clusterset.local
expect "from c1: curl whereami-cs.sample.svc.clusterset.local → a c2 pod, caller $client_ip (crossed the tunnel, pod IP kept)" \
  "node_name=c2-" answered_by lab-c1 whereami-cs.sample.svc.clusterset.local c2- "${client_ip//./\\.}"
expect "CoreDNS of c1 forwards clusterset.local to Lighthouse DNS" "clusterset.local:53 \{" \
  kubectl --context lab-c1 -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}'
echo "   the same Deployment + Service in c1, exported there too:"
check "kubectl --context lab-c1 apply -f whereami-cs.yaml" kubectl --context lab-c1 apply -f "$repo/scripts/seed/whereami-cs.yaml"
check "kubectl rollout status deployment/whereami (c1)" kubectl --context lab-c1 -n sample rollout status deployment/whereami --timeout=60s
check "subctl --context lab-c1 export service --namespace sample whereami-cs" \
  subctl --context lab-c1 export service --namespace sample whereami-cs
c1_ip=$(kubectl --context lab-c1 get svc -n sample whereami-cs -o jsonpath='{.spec.clusterIP}')
eventually "from c1: nslookup whereami-cs.sample.svc.clusterset.local → now c1's own ClusterIP $c1_ip (local first)" 30 \
  "Address: ${c1_ip//./\\.}" kubectl --context lab-c1 exec client -- nslookup whereami-cs.sample.svc.clusterset.local
expect "from c1: curl whereami-cs.sample.svc.clusterset.local → a c1 pod" "node_name=c1-" \
  answered_by lab-c1 whereami-cs.sample.svc.clusterset.local c1- '.*'
expect "from c1: curl c2.whereami-cs.sample.svc.clusterset.local → still c2" "node_name=c2-" \
  answered_by lab-c1 c2.whereami-cs.sample.svc.clusterset.local c2- "${client_ip//./\\.}"

echo "== 3.5.2 Headless Service + StatefulSet in c2"
check "kubectl --context lab-c2 apply -f whereami-ss.yaml (Service whereami-ss + StatefulSet whereami)" \
  kubectl --context lab-c2 apply -f "$repo/scripts/seed/whereami-ss.yaml"
check "kubectl rollout status statefulset/whereami" kubectl --context lab-c2 -n sample rollout status statefulset/whereami --timeout=90s
check "subctl --context lab-c2 export service whereami-ss --namespace sample" \
  subctl --context lab-c2 export service whereami-ss --namespace sample
ss_ips=$(kubectl --context lab-c2 get pods -n sample -l app=whereami-ss -o jsonpath='{.items[*].status.podIP}')
pod0_ip=$(kubectl --context lab-c2 get pod -n sample whereami-0 -o jsonpath='{.status.podIP}')
eventually "from c1: nslookup whereami-ss.sample.svc.clusterset.local → the three pod IPs ($ss_ips)" 30 "^all found$" \
  all_in "$ss_ips" kubectl --context lab-c1 exec client -- nslookup whereami-ss.sample.svc.clusterset.local
eventually "from c1: nslookup whereami-0.c2.whereami-ss.sample.svc.clusterset.local → $pod0_ip" 30 "Address: ${pod0_ip//./\\.}" \
  kubectl --context lab-c1 exec client -- nslookup whereami-0.c2.whereami-ss.sample.svc.clusterset.local
expect "from c1: curl whereami-0.c2.whereami-ss.sample.svc.clusterset.local → whereami-0" '"pod_name": ?"whereami-0"' \
  whereami_from lab-c1 whereami-0.c2.whereami-ss.sample.svc.clusterset.local
check "kubectl --context lab-c1 get serviceimport -n sample" kubectl --context lab-c1 get serviceimport -n sample
check "kubectl --context lab-c1 get endpointslices -n sample" kubectl --context lab-c1 get endpointslices -n sample
check "kubectl --context lab-c2 get endpointslices -n sample" kubectl --context lab-c2 get endpointslices -n sample
}

section4() {
echo "== 4.1 Globalnet clusters: broker-globalnet, g1, g2 — all with 10.7.0.0/16 and 10.77.0.0/16"
create_cluster broker-globalnet 0 10.7.0.0/16 10.77.0.0/16
create_cluster g1 1 10.7.0.0/16 10.77.0.0/16
create_cluster g2 1 10.7.0.0/16 10.77.0.0/16

echo "== 4.2 Broker"
check "subctl --context lab-broker-globalnet deploy-broker --globalnet=true --globalnet-cidr-range 120.0.0.0/8" \
  subctl --context lab-broker-globalnet deploy-broker --globalnet=true --globalnet-cidr-range 120.0.0.0/8

echo "== 4.3 Join"
check "subctl --context lab-g1 join broker-info.subm --clusterid g1 --globalnet-cidr 120.1.0.0/24" \
  subctl --context lab-g1 join broker-info.subm --clusterid g1 --globalnet-cidr 120.1.0.0/24
check "subctl --context lab-g2 join broker-info.subm --clusterid g2 --globalnet-cidr 120.2.0.0/24" \
  subctl --context lab-g2 join broker-info.subm --clusterid g2 --globalnet-cidr 120.2.0.0/24

echo "== 4.4 Connections"
eventually "subctl show connections --context lab-g1" 60 "g2-worker +g2 .* connected" subctl show connections --context lab-g1
eventually "subctl show connections --context lab-g2" 60 "g1-worker +g1 .* connected" subctl show connections --context lab-g2

echo "== 4.5.1 ClusterIP Service"
check "kubectl --context lab-g2 create namespace sample" kubectl --context lab-g2 create namespace sample
check "kubectl --context lab-g1 create namespace sample" kubectl --context lab-g1 create namespace sample
check "kubectl --context lab-g2 apply -f whereami-cs.yaml" kubectl --context lab-g2 apply -f "$repo/scripts/seed/whereami-cs.yaml"
check "kubectl rollout status deployment/whereami (g2)" kubectl --context lab-g2 -n sample rollout status deployment/whereami --timeout=60s
check "subctl --context lab-g2 export service --namespace sample whereami-cs" \
  subctl --context lab-g2 export service --namespace sample whereami-cs
eventually "g2: the internal Service submariner-<hash> carries the global IP as externalIPs" 30 "submariner-.*120\.2\.0\." \
  kubectl --context lab-g2 get svc -n sample -o custom-columns=NAME:.metadata.name,EXTERNAL:.spec.externalIPs
check "kubectl --context lab-g2 get globalingressip -n sample" kubectl --context lab-g2 get globalingressip -n sample
check "kubectl --context lab-g1 run client --image=cr7258/nettool:v1" kubectl --context lab-g1 run client --image=cr7258/nettool:v1
check "client Ready" kubectl --context lab-g1 wait --for=condition=Ready pod/client --timeout=60s
eventually "from g1: nslookup whereami-cs.sample.svc.clusterset.local → a global IP in 120.2.0.0/24" 45 "Address: 120\.2\.0\." \
  kubectl --context lab-g1 exec client -- nslookup whereami-cs.sample.svc.clusterset.local
eventually "from g1: curl whereami-cs.sample.svc.clusterset.local → a g2 pod, caller SNATed into 120.1.0.0/24" 30 "node_name=g2-" \
  answered_by lab-g1 whereami-cs.sample.svc.clusterset.local g2- '120\.1\.0\.[0-9]+'
expect "g1-worker (in its gateway pod): SM-GN-EGRESS-CLUSTER SNATs the cluster CIDR to 120.1.0.1-120.1.0.8" \
  "SM-GN-EGRESS-CLUSTER -s 10\.7\.0\.0/16 .*--to-source 120\.1\.0\.1-120\.1\.0\.8" \
  node_rules lab-g1 g1-worker SM-GN-EGRESS-CLUSTER
expect "g2-worker: kube-proxy DNATs the global IP (externalIP) to the pods" "KUBE-SERVICES -d 120\.2\.0\." \
  node_rules lab-g2 g2-worker "KUBE-SERVICES -d 120"

echo "== 4.5.2 Headless Service + StatefulSet in g2"
check "kubectl --context lab-g2 apply -f whereami-ss.yaml" kubectl --context lab-g2 apply -f "$repo/scripts/seed/whereami-ss.yaml"
check "kubectl rollout status statefulset/whereami (g2)" kubectl --context lab-g2 -n sample rollout status statefulset/whereami --timeout=90s
check "subctl --context lab-g2 export service whereami-ss --namespace sample" \
  subctl --context lab-g2 export service whereami-ss --namespace sample
eventually "from g1: nslookup whereami-ss.sample.svc.clusterset.local → the pods' global IPs" 45 "Address: 120\.2\.0\..*Address: 120\.2\.0\..*Address: 120\.2\.0\." \
  sh -c 'kubectl --context lab-g1 exec client -- nslookup whereami-ss.sample.svc.clusterset.local | tr "\n" " "'
eventually "from g1: nslookup whereami-0.g2.whereami-ss.sample.svc.clusterset.local → a global IP" 30 "Address: 120\.2\.0\." \
  kubectl --context lab-g1 exec client -- nslookup whereami-0.g2.whereami-ss.sample.svc.clusterset.local
expect "from g1: curl whereami-0.g2.whereami-ss.sample.svc.clusterset.local → whereami-0" '"pod_name": ?"whereami-0"' \
  whereami_from lab-g1 whereami-0.g2.whereami-ss.sample.svc.clusterset.local
expect "g2-worker: per-pod SNAT (SM-GN-EGRESS-HDLS-PODS) and DNAT (SUBMARINER-GN-INGRESS)" \
  "SUBMARINER-GN-INGRESS -d 120\.2\.0\.[0-9]+/32 -j DNAT" node_rules lab-g2 g2-worker "SM-GN-EGRESS-HDLS-PODS -s|SUBMARINER-GN-INGRESS -d"
}

case "$only" in
  3) section3 ;;
  4) section4 ;;
  *) section3; section4 ;;
esac

if [ "$failed" -ne 0 ]; then
  echo "walkthrough: some steps failed (✗ above)"
  exit 1
fi
echo "walkthrough: every step passed"
