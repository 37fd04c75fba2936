{{/* Names, labels and values shared by every template. */}}

{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-wide prefix; the component suffix must still fit in 63 characters. */}}
{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "berth.operator.fullname" -}}
{{- printf "%s-operator" (include "berth.fullname" .) }}
{{- end }}

{{- define "berth.gateway.fullname" -}}
{{- printf "%s-gateway" (include "berth.fullname" .) }}
{{- end }}

{{- define "berth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "berth.labels" -}}
helm.sh/chart: {{ include "berth.chart" .ctx }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: berth
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select a component's pods; never change them between releases. */}}
{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* The gateway's selector as `key=value,…`, the form `--gateway-selector` takes. */}}
{{- define "berth.gateway.selectorFlag" -}}
{{- $labels := include "berth.selectorLabels" (dict "ctx" . "component" "gateway") | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "berth.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "berth.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "berth.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "berth.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the gateway's tokens file. */}}
{{- define "berth.gateway.tokensSecretName" -}}
{{- default (printf "%s-tokens" (include "berth.gateway.fullname" .)) .Values.gateway.auth.existingSecret }}
{{- end }}

{{- define "berth.gateway.tokensSecretKey" -}}
{{- if .Values.gateway.auth.existingSecret }}
{{- .Values.gateway.auth.existingSecretKey }}
{{- else }}
{{- "tokens" }}
{{- end }}
{{- end }}

{{/*
The namespace whose Plugins the gateway serves: the gateway API names plugins without a
namespace, so one gateway serves one namespace.
*/}}
{{- define "berth.gateway.pluginNamespace" -}}
{{- $ns := .Values.gateway.pluginNamespace | default .Values.watchNamespace | default "default" }}
{{- if and .Values.watchNamespace (ne $ns .Values.watchNamespace) }}
{{- fail (printf "gateway.pluginNamespace (%s) must be watchNamespace (%s): the operator runs no plugins elsewhere" $ns .Values.watchNamespace) }}
{{- end }}
{{- $ns }}
{{- end }}

{{/* The gateway's in-cluster URL, which plugins get as BERTH_GATEWAY_URL. */}}
{{- define "berth.gateway.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "berth.gateway.fullname" .) .Release.Namespace (int .Values.gateway.service.port) }}
{{- end }}

{{- /* The egress proxy as plugins reach it: the gateway Service's egress port. */ -}}
{{- define "berth.gateway.egressProxy" -}}
{{- printf "%s.%s.svc:%d" (include "berth.gateway.fullname" .) .Release.Namespace (int .Values.gateway.egress.port) }}
{{- end }}

{{- define "berth.leaseName" -}}
{{- default (include "berth.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* Restricted Pod Security Standard, for the pod and for each container. */}}
{{- define "berth.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "berth.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* True when a ServiceMonitor should be rendered. */}}
{{- define "berth.serviceMonitor.enabled" -}}
{{- if and .Values.serviceMonitor.enabled (or .Values.serviceMonitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) }}true{{ end }}
{{- end }}

{{/* The DNS selector as `key=value,…`, the form `--dns-selector` takes. */}}
{{- define "berth.dnsSelectorFlag" -}}
{{- $pairs := list }}
{{- range $k, $v := .Values.operator.dns.selector }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Egress to the cluster DNS. */}}
{{- define "berth.networkPolicy.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.operator.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.operator.dns.selector | nindent 10 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}

{{/* Egress to the Kubernetes API server: its address is not a pod, so it is given as CIDRs. */}}
{{- define "berth.networkPolicy.apiServerEgress" -}}
- ports:
    {{- range .Values.networkPolicy.kubeAPIServer.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.kubeAPIServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The pods of the plugins the gateway serves. */}}
{{- /* The pods of PluginBenchmark Jobs, which call the gateway like any caller. */ -}}
{{- define "berth.networkPolicy.benchmarkPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/managed-by: berth-operator
      app.kubernetes.io/component: benchmark
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ include "berth.gateway.pluginNamespace" . }}
{{- end }}
{{- define "berth.networkPolicy.pluginPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/managed-by: berth-operator
      app.kubernetes.io/component: plugin
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ include "berth.gateway.pluginNamespace" . }}
{{- end }}
