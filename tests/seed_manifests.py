"""The seed article's whereami manifests (WALKTHROUGH.md §3.5.1 and §3.5.2), exactly as it applies them."""

ENV = """\
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
"""

# §3.5.1 and §3.5.2, as the article applies them.
WHEREAMI_CS = """\
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
""" + ENV + """\
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
"""

WHEREAMI_SS = """\
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
""" + ENV
