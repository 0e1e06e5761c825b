{{/*
Names. Kubernetes names are DNS labels: at most 63 characters. Component objects are cut to
52 so that StatefulSet pod names (`-<ordinal>`) and controller-revision-hash labels still fit.
*/}}
{{- define "choreo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "choreo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of one component's objects: (dict "ctx" $ "component" "payment"). The full name is
shortened, never the component, so that two components never collide after truncation.
*/}}
{{- define "choreo.componentName" -}}
{{- $room := max 1 (sub 51 (len .component)) | int }}
{{- $prefix := include "choreo.fullname" .ctx | trunc $room | trimSuffix "-" }}
{{- printf "%s-%s" $prefix .component | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "choreo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the immutable subset used in selectors (name, instance, component).
Call with (dict "ctx" $ "component" "payment").
*/}}
{{- define "choreo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "choreo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The full label set of every object: (dict "ctx" $ "component" "payment"). */}}
{{- define "choreo.labels" -}}
{{ include "choreo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: choreo
helm.sh/chart: {{ include "choreo.chart" .ctx }}
{{- end }}

{{- define "choreo.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The services, as YAML (use with fromYaml). For each: its values key, whether it is partitioned
(replicas = partitions, pod ordinal = partition), and the event types it consumes from EVENTS
(the NACK Consumer filters; they must match each services/<name>/events.py, from which
`choreo provision` derives the same consumers; tests/chart/test_provisioning.py compares the
rendered Consumers with common.provision.consumer_configs so the two cannot drift).
order-status consumes everything, dlq reads the ADVISORIES stream.
*/}}
{{- define "choreo.services" -}}
order:
  key: order
  partitioned: true
  api: true
  consumes: [payment.failed, payment.refunded]
payment:
  key: payment
  partitioned: true
  consumes: [order.placed, inventory.reservation_failed]
inventory:
  key: inventory
  partitioned: true
  # order.placed only to remember the items: payment.succeeded does not carry them.
  consumes: [order.placed, payment.succeeded]
shipping:
  key: shipping
  partitioned: true
  consumes: [inventory.reserved]
order-status:
  key: orderStatus
  partitioned: false
  api: true
  consumes:
    - order.placed
    - payment.succeeded
    - payment.failed
    - payment.refunded
    - inventory.reserved
    - inventory.reservation_failed
    - shipment.scheduled
    - order.cancelled
dlq:
  key: dlq
  partitioned: false
  consumes: []
{{- end }}

{{/* Replicas of one service: (dict "ctx" $ "service" "payment"). */}}
{{- define "choreo.replicas" -}}
{{- $svc := get (include "choreo.services" .ctx | fromYaml) .service }}
{{- if $svc.partitioned }}
{{- .ctx.Values.partitions }}
{{- else }}
{{- (get .ctx.Values.services $svc.key).replicas }}
{{- end }}
{{- end }}

{{- define "choreo.serviceAccountName" -}}
{{- if .ctx.Values.serviceAccount.create }}
{{- include "choreo.componentName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{- define "choreo.terminationGracePeriodSeconds" -}}
{{- add .Values.config.drainTimeoutSeconds .Values.config.terminationGraceExtraSeconds }}
{{- end }}

{{/* Fail early on value combinations the schema cannot express. */}}
{{- define "choreo.validate" -}}
{{- if and (ne .Values.nats.auth.mode "none") (not .Values.nats.auth.existingSecret) }}
{{- fail "nats.auth.existingSecret is required when nats.auth.mode is not none" }}
{{- end }}
{{- if and .Values.nats.tls.enabled (not .Values.nats.tls.existingSecret) }}
{{- fail "nats.tls.existingSecret is required when nats.tls.enabled is true" }}
{{- end }}
{{- end }}

{{/*
NATS connection env of one user: (dict "ctx" $ "user" "payment"). TLS paths come from the
ConfigMap; user and password/creds are per service and never leave their Secret.
*/}}
{{- define "choreo.natsAuthEnv" -}}
{{- $auth := .ctx.Values.nats.auth }}
{{- if eq $auth.mode "password" }}
- name: CHOREO_NATS_USER
  value: {{ .user | quote }}
- name: CHOREO_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ printf "%s-password" .user }}
{{- else if eq $auth.mode "creds" }}
- name: CHOREO_NATS_CREDS
  value: {{ printf "/etc/choreo/nats-creds/%s.creds" .user | quote }}
{{- end }}
{{- end }}

{{/* NATS volumes of one user: (dict "ctx" $ "user" "payment"). */}}
{{- define "choreo.natsVolumes" -}}
{{- if eq .ctx.Values.nats.auth.mode "creds" }}
- name: nats-creds
  secret:
    secretName: {{ .ctx.Values.nats.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ printf "%s.creds" .user }}
        path: {{ printf "%s.creds" .user }}
{{- end }}
{{- if .ctx.Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ .ctx.Values.nats.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "choreo.natsVolumeMounts" -}}
{{- if eq .Values.nats.auth.mode "creds" }}
- name: nats-creds
  mountPath: /etc/choreo/nats-creds
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/choreo/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Non-secret NATS env shared by services and the provisioning job (ConfigMap data). */}}
{{- define "choreo.natsConfigData" -}}
CHOREO_NATS_URL: {{ .Values.nats.url | quote }}
{{- if .Values.nats.tls.enabled }}
CHOREO_NATS_TLS_CA: {{ printf "/etc/choreo/nats-tls/%s" .Values.nats.tls.caKey | quote }}
{{- if .Values.nats.tls.clientCert }}
CHOREO_NATS_TLS_CERT: {{ printf "/etc/choreo/nats-tls/%s" .Values.nats.tls.certKey | quote }}
CHOREO_NATS_TLS_KEY: {{ printf "/etc/choreo/nats-tls/%s" .Values.nats.tls.keyKey | quote }}
{{- end }}
{{- end }}
CHOREO_PARTITIONS: {{ .Values.partitions | int64 | quote }}
{{- end }}
