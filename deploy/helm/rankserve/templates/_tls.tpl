{{/* TLS of the gRPC hops: Secret names, mount paths and DNS names of each component. */}}

{{/* The Secret of one component: (dict "root" $ "component" "ranker"); tls.<c>Secret or
<fullname>-<component>-tls, the name certManager's Certificate writes. */}}
{{- define "rankserve.tls.secret" -}}
{{- $key := get (dict "ranker" "rankerSecret" "envoy" "envoySecret" "model-server" "modelServerSecret") .component }}
{{- default (printf "%s-tls" (include "rankserve.componentName" .)) (get .root.Values.tls $key) }}
{{- end }}

{{/* Where a component's Secret is mounted (tls.crt, tls.key, ca.crt). */}}
{{- define "rankserve.tls.dir" -}}
/etc/rankserve/tls
{{- end }}

{{/* DNS names a component's Service answers to: (dict "root" $ "service" NAME). */}}
{{- define "rankserve.tls.dnsNames" -}}
{{- $ns := .root.Release.Namespace }}
{{- toJson (list .service (printf "%s.%s" .service $ns) (printf "%s.%s.svc" .service $ns) (printf "%s.%s.svc.cluster.local" .service $ns)) }}
{{- end }}

{{/* The host name of the OTLP collector in tracing.otlpEndpoint. */}}
{{- define "rankserve.tls.collectorHost" -}}
{{- $hostPort := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" .Values.tracing.otlpEndpoint "" | trimSuffix "/" }}
{{- regexReplaceAll ":[0-9]+$" $hostPort "" }}
{{- end }}

{{/* Fails on TLS values that cannot work together; renders nothing. */}}
{{- define "rankserve.tls.check" -}}
{{- if and .Values.tracing.tls.enabled (not .Values.tls.enabled) }}
{{- fail "tracing.tls.enabled needs tls.enabled: the components present their tls.* certificates to the collector" }}
{{- end }}
{{- if and .Values.tracing.enabled .Values.tracing.tls.enabled (not (hasPrefix "https://" .Values.tracing.otlpEndpoint)) }}
{{- fail "tracing.tls.enabled needs an https:// tracing.otlpEndpoint" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.modelServer.runtime "tfServing") (not .Values.tls.tfServingSslConfigSecret) }}
{{- fail "tls.enabled with modelServer.runtime tfServing needs tls.tfServingSslConfigSecret: a Secret holding ssl.config, TF Serving's SSLConfig (its certificate, key and client CA inline), since TF Serving reads no PEM files" }}
{{- end }}
{{- if and .Values.certManager.enabled (not .Values.tls.enabled) }}
{{- fail "certManager.enabled needs tls.enabled: the Certificates it renders are the TLS Secrets" }}
{{- end }}
{{- $c := .Values.tls.callers }}
{{- if and (or $c.caSecret $c.tokensSecret $c.allowed) (not .Values.tls.enabled) }}
{{- fail "tls.callers.* needs tls.enabled: callers are authenticated over TLS only (a bearer token in plaintext can be read on the wire); set tls.enabled, or unset tls.callers" }}
{{- end }}
{{- end }}

{{/*
Fills envoy.config.downstreamTls, upstreamTls and tracingTls from tls.* when TLS is on and
the user left them empty, with the paths where Envoy's Secret is mounted, so the generated
bootstrap (which reads only envoy.config) runs the hops encrypted.
*/}}
{{- define "rankserve.envoy.tlsFromValues" -}}
{{- $cfg := .Values.envoy.config }}
{{- if .Values.tls.enabled }}
{{- $dir := include "rankserve.tls.dir" . }}
{{- $pair := dict "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir) }}
{{- $ca := printf "%s/ca.crt" $dir }}
{{- if not $cfg.downstreamTls }}
{{- $_ := set $cfg "downstreamTls" (merge (dict "clientCa" $ca) $pair) }}
{{- end }}
{{- if not $cfg.upstreamTls }}
{{- $upstream := (first (include "rankserve.envoy.upstreams" . | fromJsonArray)).host }}
{{- $_ := set $cfg "upstreamTls" (merge (dict "ca" $ca "serverName" $upstream) $pair) }}
{{- end }}
{{- if and .Values.tracing.enabled .Values.tracing.tls.enabled (not $cfg.tracingTls) }}
{{- $_ := set $cfg "tracingTls" (merge (dict "ca" $ca "serverName" (include "rankserve.tls.collectorHost" .)) $pair) }}
{{- end }}
{{- end }}
{{- end }}
