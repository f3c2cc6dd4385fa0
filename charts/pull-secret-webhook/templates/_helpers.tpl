{{/* Chart name, overridable. */}}
{{- define "psw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object names. A release called pull-secret-webhook (the documented install) gets exactly
the names of manifests/: pull-secret-webhook, pull-secret-webhook-tls, -config.
*/}}
{{- define "psw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "psw.tlsSecret" -}}{{ include "psw.fullname" . }}-tls{{- end -}}
{{- define "psw.configMap" -}}{{ include "psw.fullname" . }}-config{{- end -}}
{{- define "psw.certsJob" -}}{{ include "psw.fullname" . | trunc 57 | trimSuffix "-" }}-certs{{- end -}}

{{- define "psw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "psw.labels" -}}
{{ include "psw.selectorLabels" . }}
app.kubernetes.io/part-of: pull-secret-webhook
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with (merge (deepCopy (default dict .Values.commonLabels)) (default dict (.Values.global).commonLabels)) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The webhook's ServiceAccount: the chart's own (named after the release unless
serviceAccount.name says otherwise), or with serviceAccount.create=false one you manage,
which must then be named. Every binding, the write policies' username and the
pod-identity subjects use this one name.
*/}}
{{- define "psw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "psw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the ServiceAccount to run as, required with serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The username the API server gives the webhook's requests (policies, docs). */}}
{{- define "psw.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "psw.serviceAccountName" . }}
{{- end -}}

{{/*
Pod spec lines shared by every pod the chart runs: imagePullSecrets (global ones first,
as names or {name: ...}) and, for the webhook, the priority class.
*/}}
{{- define "psw.imagePullSecrets" -}}
{{- $names := list -}}
{{- range (concat (default list (.Values.global).imagePullSecrets) (default list .Values.imagePullSecrets)) -}}
{{- if kindIs "string" . -}}
{{- $names = append $names . -}}
{{- else -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- with ($names | compact | uniq) }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The image. global.imageRegistry (an umbrella chart's mirror) replaces the registry host
of image.repository (its first path component when that names a host: it has a "." or a
":", or is localhost), or prefixes a repository without one.
*/}}
{{- define "psw.image" -}}
{{- $repository := .Values.image.repository -}}
{{- with (.Values.global).imageRegistry -}}
{{- $parts := splitList "/" $repository -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repository = join "/" (rest $parts) -}}
{{- end -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{ $repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ $repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Pod spec lines of the certs Jobs and the test pod for the hookPods values. */}}
{{- define "psw.hookPodNetwork" -}}
{{- if .Values.hookPods.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .Values.hookPods.hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Namespaces the webhook never serves: kube-system (system pods must never wait for it), the
release namespace (its own pods must start while it is down), then webhook.excludeNamespaces.
*/}}
{{- define "psw.excludedNamespaces" -}}
{{- toYaml (uniq (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces)) -}}
{{- end -}}

{{/*
config.yaml: the `config` values plus what the chart knows better than the user: the
release namespace (Lease, default Secret namespace) and the webhook's timeoutSeconds.
*/}}
{{- define "psw.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "namespace" .Release.Namespace -}}
{{- $admission := deepCopy (default dict $cfg.admission) -}}
{{- $_ := set $admission "timeoutSeconds" (int .Values.webhook.timeoutSeconds) -}}
{{- $_ := set $cfg "admission" $admission -}}
{{- $refresh := deepCopy (default dict $cfg.refresh) -}}
{{- if not (hasKey $refresh "leaseName") -}}
{{- $_ := set $refresh "leaseName" (include "psw.fullname" .) -}}
{{- end -}}
{{- $_ := set $cfg "refresh" $refresh -}}
{{- $extra := without (default list .Values.webhook.excludeNamespaces) "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- if and $extra (not (hasKey $cfg "excludedNamespaces")) -}}
{{- $_ := set $cfg "excludedNamespaces" $extra -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Namespaces the webhook never writes in, as a CEL list literal (policies). */}}
{{- define "psw.neverInjected" -}}
{{- $names := concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) (default list .Values.webhook.excludeNamespaces) | uniq -}}
[{{- range $i, $n := $names }}{{ if $i }}, {{ end }}{{ $n | squote }}{{ end -}}]
{{- end -}}
