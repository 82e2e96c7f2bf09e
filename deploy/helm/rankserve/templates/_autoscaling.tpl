{{/* Autoscaling, disruption budgets and drain of the model servers and the ranker. */}}

{{/* The custom metric (served by prometheus-adapter with files/prometheus-adapter-rules.yaml)
behind each modelServer.autoscaling.metric that is not cpu. */}}
{{- define "rankserve.modelServer.customMetric" -}}
{{- get (dict "inFlight" "rankserve_model_server_predicts_in_flight" "predictsPerSecond" "rankserve_model_server_predicts_per_second") . }}
{{- end }}

{{/* modelServer.autoscaling.metric with auto resolved by runtime: inFlight for rankserve's
model server, predictsPerSecond for TF Serving (it exports no in-flight gauge). */}}
{{- define "rankserve.modelServer.scalingMetric" -}}
{{- $ms := .Values.modelServer }}
{{- if eq $ms.autoscaling.metric "auto" }}
{{- ternary "predictsPerSecond" "inFlight" (eq $ms.runtime "tfServing") }}
{{- else }}
{{- $ms.autoscaling.metric }}
{{- end }}
{{- end }}

{{/* An HPA's spec.behavior from {scaleUp, scaleDown} values; nothing when both are empty. */}}
{{- define "rankserve.hpaBehavior" -}}
{{- $b := pick (default dict .) "scaleUp" "scaleDown" }}
{{- range $k, $v := $b }}
{{- if not $v }}
{{- $_ := unset $b $k }}
{{- end }}
{{- end }}
{{- if $b }}
behavior:
  {{- toYaml $b | nindent 2 }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds of a server that drains, then gives calls grace:
(list drainSeconds graceSeconds), plus 10 s for the rest of the shutdown. */}}
{{- define "rankserve.terminationGrace" -}}
{{- ceil (addf (index . 0) (index . 1) 10) | int }}
{{- end }}

{{/* Fails the render on model-server scaling values that cannot work together. */}}
{{- define "rankserve.modelServer.checkScaling" -}}
{{- $ms := .Values.modelServer }}
{{- $a := $ms.autoscaling }}
{{- $pdb := $ms.podDisruptionBudget }}
{{- if $a.enabled }}
{{- if and (eq $a.metric "inFlight") (eq $ms.runtime "tfServing") }}
{{- fail "modelServer.autoscaling.metric inFlight needs modelServer.runtime rankserve: TF Serving exports no in-flight gauge. Set modelServer.autoscaling.metric=predictsPerSecond (or cpu) for modelServer.runtime tfServing" }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "modelServer.autoscaling.minReplicas (%d) exceeds modelServer.autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- end }}
{{- if $pdb.enabled }}
{{- $key := ternary "modelServer.autoscaling.minReplicas" "modelServer.replicaCount" $a.enabled }}
{{- $fewest := int (ternary $a.minReplicas $ms.replicaCount $a.enabled) }}
{{- if lt $fewest (int $pdb.minAvailable) }}
{{- fail (printf "%s (%d) is below modelServer.podDisruptionBudget.minAvailable (%d): with fewer model-server pods than the budget keeps, every eviction is refused and node drains hang. Raise %s or lower modelServer.podDisruptionBudget.minAvailable" $key $fewest (int $pdb.minAvailable) $key) }}
{{- end }}
{{- end }}
{{- end }}
