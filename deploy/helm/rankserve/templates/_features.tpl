{{/* The ranker's feature spec and feature stores (ranker.spec, ranker.itemFeatures,
ranker.userFeatures) and the optional in-cluster Redis (redis.*). */}}

{{/* true when the ranker has an embedded catalog (ranker.catalog.source is not none). */}}
{{- define "rankserve.catalogEnabled" -}}
{{- if ne .Values.ranker.catalog.source "none" }}true{{ end }}
{{- end }}

{{/* The spec ConfigMap's file, mounted as a directory (a subPath mount never sees updates; the
checksum annotation rolls the pods anyway, so the ranker reads it once at start). */}}
{{- define "rankserve.specDir" -}}
/etc/rankserve/spec
{{- end }}

{{- define "rankserve.specFile" -}}
{{- printf "%s/spec.yaml" (include "rankserve.specDir" .) }}
{{- end }}

{{/* The chart's own Redis: its Service's cluster DNS name. */}}
{{- define "rankserve.redis.host" -}}
{{- printf "%s.%s.svc.cluster.local" (include "rankserve.componentName" (dict "root" . "component" "redis")) .Release.Namespace }}
{{- end }}

{{/*
One feature store as JSON: (dict "root" $ "entity" "item"). Fields:
  source       catalog | tables | redis
  address      what RANKSERVE_RANKER_<ENTITY>_FEATURES gets: a table directory, a Redis URL
               (with "$(VAR)" in place of the password, expanded by the kubelet), or "" for the
               catalog's arrays
  secret       {name, key} of the password, or absent
  passwordEnv  the container variable holding the password
  volume, claimName, mountPath   the tables claim's volume (tables)
  chartRedis   true when the address is the chart's own Redis
  port         the Redis port (redis)
Tables stores on one claim share one volume: the import writes <dir>/item/ and <dir>/user/.
*/}}
{{- define "rankserve.features.store" -}}
{{- $root := .root }}
{{- $entity := .entity }}
{{- $what := printf "ranker.%sFeatures" $entity }}
{{- $store := index $root.Values.ranker (printf "%sFeatures" $entity) }}
{{- $out := dict "source" $store.source "address" "" }}
{{- if eq $store.source "tables" }}
{{- $claim := required (printf "%s.claimName is required when %s.source is tables: name the PersistentVolumeClaim holding the directory `rankserve features import --store` wrote" $what $what) $store.claimName }}
{{- $volume := "feature-tables" }}
{{- $item := $root.Values.ranker.itemFeatures }}
{{- if and (eq $entity "user") (eq $item.source "tables") (ne $item.claimName $claim) }}
{{- $volume = "user-feature-tables" }}
{{- end }}
{{- $mount := printf "/data/%s" $volume }}
{{- $_ := set $out "volume" $volume }}
{{- $_ = set $out "claimName" $claim }}
{{- $_ = set $out "mountPath" $mount }}
{{- $_ = set $out "address" (printf "%s/%s" $mount ($store.subPath | default "" | trimAll "/") | trimSuffix "/") }}
{{- else if eq $store.source "redis" }}
{{- $r := $root.Values.redis }}
{{- $address := $store.address }}
{{- $secret := $store.passwordSecret | default (dict) }}
{{- if and (not $address) $r.enabled }}
{{- $address = printf "redis://%s:%d/0" (include "rankserve.redis.host" $root) (int $r.port) }}
{{- $_ := set $out "chartRedis" true }}
{{- if not $secret.name }}
{{- $secret = $r.passwordSecret | default (dict) }}
{{- end }}
{{- end }}
{{- if not $address }}
{{- fail (printf "%s.address is required when %s.source is redis and redis.enabled is false: give your Redis, e.g. redis://redis.features:6379/0, or set redis.enabled" $what $what) }}
{{- end }}
{{- if not (regexMatch "^rediss?://[^/@:]+(:[0-9]+)?(/[0-9]+)?$" $address) }}
{{- fail (printf "%s.address %q: give redis://HOST:PORT/DB or rediss://HOST:PORT/DB, without credentials (the password comes from %s.passwordSecret)" $what $address $what) }}
{{- end }}
{{- $port := 6379 }}
{{- $hostPort := regexReplaceAll "/[0-9]+$" (regexReplaceAll "^rediss?://" $address "") "" }}
{{- if contains ":" $hostPort }}
{{- $port = regexFind "[0-9]+$" $hostPort | int }}
{{- end }}
{{- $_ := set $out "port" $port }}
{{- if $secret.name }}
{{- $env := printf "RANKSERVE_%s_REDIS_PASSWORD" (upper $entity) }}
{{- $scheme := regexFind "^rediss?://" $address }}
{{- $user := $store.username | default "" }}
{{- $_ = set $out "secret" (dict "name" $secret.name "key" (required (printf "%s.passwordSecret.key is required with its name" $what) $secret.key)) }}
{{- $_ = set $out "passwordEnv" $env }}
{{- $address = printf "%s%s:$(%s)@%s" $scheme $user $env (trimPrefix $scheme $address) }}
{{- end }}
{{- $_ = set $out "address" $address }}
{{- else if eq $store.source "catalog" }}
{{- if not (include "rankserve.catalogEnabled" $root) }}
{{- fail (printf "%s.source is catalog but ranker.catalog.source is none: take %s features from tables or redis, or give the ranker a catalog" $what $entity) }}
{{- end }}
{{- else }}
{{- fail (printf "%s.source %q: use catalog, tables or redis" $what $store.source) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Both stores: {"item": ..., "user": ...}. */}}
{{- define "rankserve.features.stores" -}}
{{- toJson (dict
    "item" (include "rankserve.features.store" (dict "root" . "entity" "item") | fromJson)
    "user" (include "rankserve.features.store" (dict "root" . "entity" "user") | fromJson)) }}
{{- end }}

{{/* Checks of ranker.catalog.source none: the ranker then ranks only the candidates callers
send, so nothing may need the catalog. */}}
{{- define "rankserve.features.checkCatalog" -}}
{{- if not (include "rankserve.catalogEnabled" .) }}
{{- if not .Values.ranker.spec }}
{{- fail "ranker.spec is required when ranker.catalog.source is none: without a catalog there is no spec.yaml to fall back to" }}
{{- end }}
{{- if .Values.embeddings.enabled }}
{{- fail "embeddings.enabled needs a catalog: ranker.catalog.source none ranks only caller-supplied candidates" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Egress of a pod reading the redis feature stores: the chart's Redis pod, or the port of
a Redis outside the release (its address may be any host, so any destination). */}}
{{- define "rankserve.networkPolicy.redisEgress" -}}
{{- $chart := false }}
{{- $ports := dict }}
{{- range (include "rankserve.features.stores" . | fromJson) }}
{{- if eq .source "redis" }}
{{- if .chartRedis }}
{{- $chart = true }}
{{- else }}
{{- $_ := set $ports (toString .port) true }}
{{- end }}
{{- end }}
{{- end }}
{{- if $chart }}
- to:
    - podSelector:
        matchLabels:
          {{- include "rankserve.selectorLabels" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - port: {{ .Values.redis.port }}
      protocol: TCP
{{- end }}
{{- if $ports }}
- ports:
    {{- range $port, $_ := $ports }}
    - port: {{ $port }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}
