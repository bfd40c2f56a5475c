#!/usr/bin/env bash
# The seed walkthrough (../shared/seed/WALKTHROUGH.md) in the lab, with only `kind` -> `sublab` and the
# `kind-` context prefix -> `lab-` changed. Each step prints the command and what it showed; the clusters are
# deleted at the end (also on failure). Steps that need parts not built yet (subctl, gateway, agent) say so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# A private kubeconfig and lab home, so the walkthrough never touches the user's own.
work=$(mktemp -d /tmp/sublab-walkthrough.XXXXXX)
export KUBECONFIG="$work/kubeconfig" SUBLAB_HOME="$work/lab"
KUBECTL=(kubectl --cache-dir "$work/kubectl-cache")
failed=0

cleanup() {
  echo "== 5. Clean-up: sublab delete clusters broker c1 c2"
  sublab delete clusters broker c1 c2 >/dev/null 2>&1 || true
  rm -rf "$work"
  echo "   removed the clusters and $work"
}
trap cleanup EXIT

show() { sed 's/^/   | /'; }
check() {  # check DESCRIPTION COMMAND...: run, print, and record the result
  local what=$1; shift
  if out=$("$@" 2>&1); then
    echo " ✓ $what"; printf '%s\n' "$out" | show
  else
    echo " ✗ $what"; printf '%s\n' "$out" | show; failed=1
  fi
}
skip() { echo " ⚠ skipped: $1"; }

echo "== 3.1 Create clusters (sublab create cluster --config -)"
for spec in "broker|- role: control-plane|10.7.0.0/16|10.77.0.0/16" \
            "c1|- role: control-plane\n- role: worker|10.8.0.0/16|10.88.0.0/16" \
            "c2|- role: control-plane\n- role: worker|10.9.0.0/16|10.99.0.0/16"; do
  IFS='|' read -r name nodes pods svcs <<<"$spec"
  config=$(printf 'kind: Cluster\nname: %s\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n%b\nnetworking:\n  apiServerAddress: 192.168.1.20\n  podSubnet: "%s"\n  serviceSubnet: "%s"\n' "$name" "$nodes" "$pods" "$svcs")
  start=$(date +%s.%N)
  check "sublab create cluster --config - (name: $name)" sublab create cluster --config - <<<"$config"
  echo "   ($(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
done
check "sublab get clusters" sublab get clusters
check "kubectl --context lab-c2 get nodes -o wide" "${KUBECTL[@]}" --context lab-c2 get nodes -o wide

echo "== 3.2-3.4 Broker, join, connections"
skip "subctl --context lab-broker deploy-broker / subctl join / subctl show connections (issues #6, #8)"

echo "== 3.5 Cross-cluster traffic: namespace sample in both clusters"
check "kubectl --context lab-c2 create namespace sample" "${KUBECTL[@]}" --context lab-c2 create namespace sample
check "kubectl --context lab-c1 create namespace sample" "${KUBECTL[@]}" --context lab-c1 create namespace sample

echo "== 3.5.1 ClusterIP Service in c2"
check "kubectl --context lab-c2 apply -f - (whereami Deployment + Service whereami-cs)" \
  "${KUBECTL[@]}" --context lab-c2 apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: whereami
  namespace: sample
spec:
  replicas: 3
  selector:
    matchLabels:
      app: whereami
  template:
    metadata:
      labels:
        app: whereami
    spec:
      containers:
      - name: whereami
        image: cr7258/whereami:v1
        imagePullPolicy: Always
        ports:
        - containerPort: 80
        env:
        - name: NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
---
apiVersion: v1
kind: Service
metadata:
  name: whereami-cs
  namespace: sample
spec:
  selector:
    app: whereami
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
EOF
check "kubectl rollout status deployment/whereami" "${KUBECTL[@]}" --context lab-c2 -n sample rollout status deployment/whereami --timeout=60s
check "kubectl --context lab-c2 get pods,svc -n sample -o wide" "${KUBECTL[@]}" --context lab-c2 get pods,svc -n sample -o wide
skip "subctl --context lab-c2 export service --namespace sample whereami-cs (issues #4, #8)"
check "kubectl --context lab-c2 run client --image=cr7258/nettool:v1" "${KUBECTL[@]}" --context lab-c2 run client --image=cr7258/nettool:v1
check "client Ready" "${KUBECTL[@]}" --context lab-c2 wait --for=condition=Ready pod/client --timeout=60s
check "in-cluster: curl whereami-cs.sample (from the c2 client)" \
  sublab exec --context lab-c2 client -- curl -s --max-time 5 whereami-cs.sample
skip "from c1: nslookup/curl whereami-cs.sample.svc.clusterset.local (needs the tunnel and the agent: issues #4, #6)"

echo "== 3.5.2 Headless Service + StatefulSet in c2"
check "kubectl --context lab-c2 apply -f - (whereami-ss + StatefulSet)" \
  "${KUBECTL[@]}" --context lab-c2 apply -f - <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: whereami-ss
  namespace: sample
  labels:
    app: whereami-ss
spec:
  ports:
  - port: 80
    name: whereami
  clusterIP: None
  selector:
    app: whereami-ss
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: whereami
  namespace: sample
spec:
  serviceName: "whereami-ss"
  replicas: 3
  selector:
    matchLabels:
      app: whereami-ss
  template:
    metadata:
      labels:
        app: whereami-ss
    spec:
      containers:
      - name: whereami-ss
        image: cr7258/whereami:v1
        ports:
        - containerPort: 80
          name: whereami
        env:
        - name: NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
EOF
check "kubectl rollout status statefulset/whereami" "${KUBECTL[@]}" --context lab-c2 -n sample rollout status statefulset/whereami --timeout=90s
check "in-cluster: nslookup whereami-ss.sample.svc.cluster.local" \
  sublab exec --context lab-c2 client -- nslookup whereami-ss.sample.svc.cluster.local
check "in-cluster: curl whereami-0.whereami-ss.sample.svc.cluster.local" \
  sublab exec --context lab-c2 client -- curl -s --max-time 5 whereami-0.whereami-ss.sample.svc.cluster.local
check "kubectl --context lab-c2 get endpointslices -n sample" "${KUBECTL[@]}" --context lab-c2 get endpointslices -n sample
skip "export whereami-ss and resolve it from c1 through clusterset.local (issues #4, #6, #8)"

echo "== 4. Globalnet"
skip "broker-globalnet, g1, g2 with overlapping CIDRs (issue #7)"

if [ "$failed" -ne 0 ]; then
  echo "walkthrough: some steps failed (✗ above)"
  exit 1
fi
echo "walkthrough: every step that exists today passed"
