{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "canary-gate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (max 63 chars, DNS label). Used for every object and
as the Service name, hence in the webhook certificate's DNS names.
*/}}
{{- define "canary-gate.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "canary-gate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object of the release (no component).
*/}}
{{- define "canary-gate.commonLabels" -}}
helm.sh/chart: {{ include "canary-gate.chart" . }}
app.kubernetes.io/name: {{ include "canary-gate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: canary-gate
{{- end }}

{{/*
Selector labels of the webhook/analyzer pods. The component keeps the
load-test Job's pods out of the Service, the PDB and the anti-affinity.
*/}}
{{- define "canary-gate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-gate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Standard labels of the webhook/analyzer objects.
*/}}
{{- define "canary-gate.labels" -}}
{{ include "canary-gate.commonLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "canary-gate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canary-gate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The identity the webhook lets touch managed objects.
*/}}
{{- define "canary-gate.controllerUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "canary-gate.serviceAccountName" .) }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "canary-gate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/*
DNS names of the webhook Service (the serving certificate's SANs).
*/}}
{{- define "canary-gate.serviceDNSNames" -}}
{{- $svc := include "canary-gate.fullname" . }}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/*
Name of the Secret holding tls.crt / tls.key for the webhook server.
*/}}
{{- define "canary-gate.tlsSecretName" -}}
{{- $mode := .Values.tls.mode }}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else if eq $mode "helm" }}
{{- printf "%s-tls" (include "canary-gate.fullname" .) }}
{{- else if eq $mode "cert-manager" }}
{{- printf "%s-certmanager-tls" (include "canary-gate.fullname" .) }}
{{- else if eq $mode "secret" }}
{{- fail "tls.mode=secret requires tls.secretName (an existing kubernetes.io/tls Secret in the release namespace)" }}
{{- else }}
{{- fail (printf "tls.mode must be one of helm, cert-manager, secret (got %q)" $mode) }}
{{- end }}
{{- end }}

{{/*
Name of the cert-manager Certificate for the serving certificate.
*/}}
{{- define "canary-gate.servingCertificateName" -}}
{{- printf "%s-serving" (include "canary-gate.fullname" .) }}
{{- end }}

{{/*
tls.caBundle (mode=secret) as the base64 string the webhook configurations
want; accepts PEM or base64-encoded PEM.
*/}}
{{- define "canary-gate.userCaBundle" -}}
{{- $raw := toString .Values.tls.caBundle }}
{{- if not (trim $raw) }}
{{- fail "tls.mode=secret requires tls.caBundle: the PEM CA certificate that signed the serving certificate (e.g. --set-file tls.caBundle=ca.crt), or its base64 encoding" }}
{{- end }}
{{- $b64 := "" }}
{{- if contains "-----BEGIN" $raw }}
{{- $b64 = b64enc $raw }}
{{- else }}
{{- $b64 = trim $raw | replace "\n" "" }}
{{- end }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec $b64)) }}
{{- fail "tls.caBundle is neither a PEM certificate nor a base64-encoded PEM certificate" }}
{{- end }}
{{- $b64 }}
{{- end }}

{{/*
namespaceSelector shared by both webhooks: only namespaces labelled
canary-gate.io/enabled=true, never kube-system nor the release namespace.
*/}}
{{- define "canary-gate.namespaceSelector" -}}
{{- $excluded := concat (list "kube-system" .Release.Namespace) (default (list) .Values.webhook.excludeNamespaces) | uniq -}}
namespaceSelector:
  matchExpressions:
    - key: canary-gate.io/enabled
      operator: In
      values: ["true"]
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range $excluded }}
        - {{ . | quote }}
        {{- end }}
{{- end }}

{{/*
Pod security context and container security context (shared by the
Deployment and the load-test Job).
*/}}
{{- define "canary-gate.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "canary-gate.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}
