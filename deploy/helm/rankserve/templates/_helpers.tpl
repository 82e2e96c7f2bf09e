{{/* Names, labels and shared pod parts of the rankserve chart. */}}

{{- define "rankserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: <release>-<chart> unless the release name holds it. */}}
{{- define "rankserve.fullname" -}}
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

{{/* Name of one component's resources: (dict "root" $ "component" "ranker"). */}}
{{- define "rankserve.componentName" -}}
{{- printf "%s-%s" (include "rankserve.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "rankserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "ranker"). */}}
{{- define "rankserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rankserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources and pods. */}}
{{- define "rankserve.labels" -}}
helm.sh/chart: {{ include "rankserve.chart" .root }}
{{ include "rankserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rankserve
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rankserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rankserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "rankserve.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The model servers' headless Service: one DNS record per ready pod, for Envoy. */}}
{{- define "rankserve.modelServer.headless" -}}
{{- printf "%s-headless" (include "rankserve.componentName" (dict "root" . "component" "model-server")) }}
{{- end }}

{{/* Envoy's upstreams as a JSON list of {host, port}: envoy.upstreams, or the headless
Service's cluster DNS name (STRICT_DNS resolves it to every model-server pod). */}}
{{- define "rankserve.envoy.upstreams" -}}
{{- if .Values.envoy.upstreams }}
{{- toJson .Values.envoy.upstreams }}
{{- else }}
{{- $host := printf "%s.%s.svc.cluster.local" (include "rankserve.modelServer.headless" .) .Release.Namespace }}
{{- toJson (list (dict "host" $host "port" (int .Values.modelServer.grpcPort))) }}
{{- end }}
{{- end }}

{{/* Spread a component's pods over nodes and zones unless the values give constraints:
(dict "root" $ "component" "ranker" "constraints" list). */}}
{{- define "rankserve.topologySpread" -}}
{{- if .constraints }}
{{- toYaml .constraints }}
{{- else }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "rankserve.selectorLabels" . | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "rankserve.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* A data volume (catalog or models) from a claim, an init-container copy or a host path:
(dict "name" "models" "store" .Values.modelServer.modelStore "what" "modelServer.modelStore"). */}}
{{- define "rankserve.dataVolume" -}}
- name: {{ .name }}
{{- if eq .store.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required (printf "%s.claimName is required when %s.source is pvc: name an existing PersistentVolumeClaim" .what .what) .store.claimName }}
    readOnly: true
{{- else if eq .store.source "objectStore" }}
  emptyDir:
    sizeLimit: {{ .store.sizeLimit | default "20Gi" }}
{{- else if eq .store.source "hostPath" }}
  hostPath:
    path: {{ required (printf "%s.hostPath is required when %s.source is hostPath" .what .what) .store.hostPath }}
    type: Directory
{{- end }}
{{- end }}

{{/* The init container that fills an objectStore data volume:
(dict "root" $ "name" "models" "store" ... "what" ...). Renders nothing for other sources. */}}
{{- define "rankserve.objectStoreCopy" -}}
{{- if eq .store.source "objectStore" }}
{{- $copy := .root.Values.objectStoreCopy }}
- name: copy-{{ .name }}
  image: {{ printf "%s:%s" $copy.image.repository $copy.image.tag }}
  imagePullPolicy: {{ $copy.image.pullPolicy }}
  command: {{ toJson $copy.command }}
  env:
    - name: SOURCE_URI
      value: {{ required (printf "%s.uri is required when %s.source is objectStore, e.g. s3://bucket/path" .what .what) .store.uri | quote }}
    - name: TARGET_DIR
      value: /data/{{ .name }}
    - name: HOME
      value: /tmp
  {{- with $copy.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $copy.resources | nindent 4 }}
  volumeMounts:
    - name: {{ .name }}
      mountPath: /data/{{ .name }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end }}

{{/* Port of the model server's Prometheus endpoint: TF Serving's REST port or rankserve's. */}}
{{- define "rankserve.modelServer.metricsPort" -}}
{{- if eq .Values.modelServer.runtime "tfServing" }}
{{- .Values.modelServer.tfServing.restPort }}
{{- else }}
{{- .Values.modelServer.rankserve.metricsPort }}
{{- end }}
{{- end }}

{{- define "rankserve.modelServer.metricsPath" -}}
{{- if eq .Values.modelServer.runtime "tfServing" }}/monitoring/prometheus/metrics{{ else }}/metrics{{ end }}
{{- end }}

{{/* Egress every rankserve pod needs: cluster DNS, and OTLP export when tracing is on. */}}
{{- define "rankserve.networkPolicy.baseEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if .Values.tracing.enabled }}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.telemetryNamespaceSelector | nindent 10 }}
  ports:
    - port: 4317
      protocol: TCP
{{- end }}
{{- end }}

{{/* Egress to object storage (HTTPS anywhere) for a data volume filled by an init container. */}}
{{- define "rankserve.networkPolicy.objectStoreEgress" -}}
{{- if eq .source "objectStore" }}
- ports:
    - port: 443
      protocol: TCP
{{- end }}
{{- end }}

{{/* Ingress of Prometheus scrapes on a named port. */}}
{{- define "rankserve.networkPolicy.scrapeIngress" -}}
- from:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .root.Values.networkPolicy.prometheusNamespaceSelector | nindent 10 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}

{{/*
Fills envoy.config.tracing from the top-level tracing values when tracing is on and the user
left it empty, so the generated Envoy template (which reads only envoy.config) traces to the
same collector as the ranker. Envoy samples new traces at the ranker's ratio.
*/}}
{{- define "rankserve.envoy.tracingFromValues" -}}
{{- $cfg := .Values.envoy.config }}
{{- if and .Values.tracing.enabled (not $cfg.tracing) }}
{{- $hostPort := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" .Values.tracing.otlpEndpoint "" | trimSuffix "/" }}
{{- $host := regexReplaceAll ":[0-9]+$" $hostPort "" }}
{{- $port := 4317 }}
{{- if regexMatch ":[0-9]+$" $hostPort }}
{{- $port = regexFind "[0-9]+$" $hostPort | int }}
{{- end }}
{{- $discovery := ternary "STATIC" "STRICT_DNS" (regexMatch "^[0-9.]+$" $host) }}
{{- $_ := set $cfg "tracing" (dict "collectorHost" $host "collectorPort" $port "serviceName" "rankserve-envoy" "samplingPercent" 100.0 "discovery" $discovery) }}
{{- end }}
{{- end }}

{{/* The ranker's catalog directory inside the catalog volume (mounted at /data/catalog); the
refresh job reads the same one. */}}
{{- define "rankserve.catalogDir" -}}
{{- printf "/data/catalog/%s" .Values.ranker.catalog.subPath | trimSuffix "/" }}
{{- end }}

{{/* The shared embeddings claim: (dict "root" $ "readOnly" true). Rankers read it, the refresh
job writes it. */}}
{{- define "rankserve.embeddingsVolume" -}}
- name: embeddings
  persistentVolumeClaim:
    claimName: {{ required "embeddings.claimName is required when embeddings.enabled is true: name an existing ReadWriteMany PersistentVolumeClaim that the refresh job writes and every ranker pod reads" .root.Values.embeddings.claimName }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
{{- end }}

{{/* Where the embeddings claim is mounted in rankers and in the refresh job. */}}
{{- define "rankserve.embeddingsRoot" -}}
/data/embeddings
{{- end }}

{{/* The ranker's routing file: routing.yaml of the routing ConfigMap, mounted as a directory
(never with subPath, whose files the kubelet does not update). */}}
{{- define "rankserve.routingDir" -}}
/etc/rankserve/routing
{{- end }}

{{- define "rankserve.routingFile" -}}
{{- printf "%s/routing.yaml" (include "rankserve.routingDir" .) }}
{{- end }}
