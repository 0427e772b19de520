// Validates custom resources against their operators' CRD schemas, with the validators that the
// @kubernetes-models packages generate from those CRDs (deploy/tools.sh installs them).
//   node validate_crds.mjs MODELS_DIR < objects.json   ->   [{kind, name, error}] on stdout
// CRD schemas allow unknown fields, so this catches wrong types, values and missing required fields.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = join(process.argv[2], "node_modules", "@kubernetes-models");
const CLASSES = {
  "keda.sh/v1alpha1/ScaledObject": ["keda/keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["keda/keda.sh/v1alpha1/TriggerAuthentication.js", "TriggerAuthentication"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js", "PrometheusRule"],
};

const results = [];
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const name = obj.metadata?.name;
  if (!(key in CLASSES)) {
    results.push({ kind: obj.kind, name, error: `no validator for ${key}` });
    continue;
  }
  const [file, cls] = CLASSES[key];
  const Model = (await import(pathToFileURL(join(modules, file)).href))[cls];
  try {
    new Model(obj).validate();
    results.push({ kind: obj.kind, name, error: null });
  } catch (e) {
    results.push({ kind: obj.kind, name, error: String(e.message) });
  }
}
process.stdout.write(JSON.stringify(results));
