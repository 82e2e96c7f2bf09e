{{/* The embedding refresh job's pod, shared by embeddings-cronjob.yaml and
embeddings-job.yaml: `rankserve embeddings publish` from the ranker image, reading the catalog
the rankers read (same volume, same directory) and writing the shared embeddings claim. */}}

{{- define "rankserve.embeddingsRefresh.name" -}}
{{- include "rankserve.componentName" (dict "root" . "component" "embeddings-refresh") }}
{{- end }}

{{/* The publish command line, as the container's args (the image's entrypoint is rankserve). */}}
{{- define "rankserve.embeddingsRefresh.args" -}}
{{- $r := .Values.embeddings.refresh }}
{{- $args := list "embeddings" "publish"
    "--catalog-dir" (include "rankserve.catalogDir" .)
    "--root" (include "rankserve.embeddingsRoot" .)
    "--model" .Values.embeddings.model
    "--version" (int $r.version | toString) }}
{{- if eq $r.mode "delta" }}
{{- $file := required "embeddings.refresh.changedItemsFile is required when embeddings.refresh.mode is delta: the absolute path of the changed item ids in the job's pod" $r.changedItemsFile }}
{{- $args = concat $args (list "--delta" "--changed-items" $file) }}
{{- else }}
{{- $args = append $args "--bulk" }}
{{- end }}
{{- $args = concat $args (list "--keep-user-versions" (int $r.keepUserVersions | toString)) }}
{{- toJson $args }}
{{- end }}

{{- define "rankserve.embeddingsRefresh.pod" -}}
{{- $r := .Values.embeddings.refresh }}
{{- $component := dict "root" . "component" "embeddings-refresh" -}}
metadata:
  labels:
    {{- include "rankserve.labels" $component | nindent 4 }}
  {{- with $r.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # A failed attempt keeps its pod (and log); backoffLimit starts a new one.
  restartPolicy: Never
  serviceAccountName: {{ include "rankserve.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with (include "rankserve.objectStoreCopy" (dict "root" . "name" "catalog" "store" .Values.ranker.catalog "what" "ranker.catalog")) }}
  initContainers:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: publish
      image: {{ include "rankserve.image" (dict "root" . "image" .Values.ranker.image) }}
      imagePullPolicy: {{ .Values.ranker.image.pullPolicy }}
      args: {{ include "rankserve.embeddingsRefresh.args" . }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $r.resources | nindent 8 }}
      volumeMounts:
        - name: catalog
          mountPath: /data/catalog
          readOnly: true
        - name: embeddings
          mountPath: {{ include "rankserve.embeddingsRoot" . }}
        - name: tmp
          mountPath: /tmp
  volumes:
    {{- include "rankserve.dataVolume" (dict "name" "catalog" "store" .Values.ranker.catalog "what" "ranker.catalog") | nindent 4 }}
    {{- include "rankserve.embeddingsVolume" (dict "root" . "readOnly" false) | nindent 4 }}
    - name: tmp
      emptyDir: {}
  {{- with $r.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
