// Checks of the chart's output and inputs with independent validators
// (run by deploy/k8s/tests/chart-test after `npm ci` here):
//
//   node validate.mjs values SCHEMA DEFAULTS [VALUES...]
//       Helm's merge of the defaults with each VALUES file, validated
//       against values.schema.json (ajv); exit 1 when invalid.
//   node validate.mjs objects OUT.ts RENDERED.yaml...
//       Every rendered object through its kubernetes-models class's
//       validate() (the Kubernetes OpenAPI schema: types, required fields,
//       formats); writes OUT.ts assigning each object, as a literal, to its
//       interface, so `tsc --noEmit` rejects any field the API does not have.
//   node validate.mjs dashboards OUT.ts DASHBOARD.json...
//       Writes OUT.ts assigning each dashboard to @grafana/schema's
//       Dashboard type, for tsc to check the same way.
import fs from "node:fs";
import yaml from "js-yaml";
import Ajv from "ajv";

const KINDS = {
  "apps/v1 Deployment": ["kubernetes-models/apps/v1/Deployment", "Deployment"],
  "apps/v1 StatefulSet": ["kubernetes-models/apps/v1/StatefulSet", "StatefulSet"],
  "v1 Service": ["kubernetes-models/v1/Service", "Service"],
  "v1 ConfigMap": ["kubernetes-models/v1/ConfigMap", "ConfigMap"],
  "networking.k8s.io/v1 NetworkPolicy": ["kubernetes-models/networking.k8s.io/v1/NetworkPolicy", "NetworkPolicy"],
  "policy/v1 PodDisruptionBudget": ["kubernetes-models/policy/v1/PodDisruptionBudget", "PodDisruptionBudget"],
  "monitoring.coreos.com/v1 ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "ServiceMonitor"],
  "monitoring.coreos.com/v1 PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "PrometheusRule"],
};

function merge(dst, src) {
  for (const [k, v] of Object.entries(src ?? {})) {
    if (v && typeof v === "object" && !Array.isArray(v) && dst[k] && typeof dst[k] === "object" && !Array.isArray(dst[k])) {
      merge(dst[k], v);
    } else {
      dst[k] = v;
    }
  }
  return dst;
}

async function values([schemaPath, defaultsPath, ...files]) {
  const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
  const validate = ajv.compile(JSON.parse(fs.readFileSync(schemaPath, "utf8")));
  const merged = yaml.load(fs.readFileSync(defaultsPath, "utf8"));
  for (const f of files) merge(merged, yaml.load(fs.readFileSync(f, "utf8")) ?? {});
  if (validate(merged)) {
    console.log(`valid: ${files.join(" ") || "defaults"}`);
    return 0;
  }
  console.log(`invalid: ${files.join(" ")}: ` +
              validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? " (" + e.params.additionalProperty + ")" : ""}`).join("; "));
  return 1;
}

async function objects([out, ...files]) {
  let failed = 0, count = 0;
  const imports = new Set(), lines = [];
  for (const file of files) {
    for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
      if (!doc) continue;
      const key = `${doc.apiVersion} ${doc.kind}`;
      const where = `${file}: ${doc.kind} ${doc.metadata?.name}`;
      if (!KINDS[key]) {
        console.log(`FAIL ${where}: no model for ${key}`);
        failed++;
        continue;
      }
      const [module, cls] = KINDS[key];
      const Model = (await import(module))[cls];
      try {
        new Model(doc).validate();
      } catch (e) {
        console.log(`FAIL ${where}: ${e.message}`);
        failed++;
      }
      imports.add(`import type { I${cls} } from "${module}";`);
      lines.push(`// ${where}\nexport const o${count}: I${cls} = ${JSON.stringify(doc, null, 2)};`);
      count++;
    }
  }
  fs.writeFileSync(out, [...imports].join("\n") + "\n" + lines.join("\n") + "\n");
  console.log(`${count} objects from ${files.length} renderings validated, ${failed} failed`);
  return failed ? 1 : 0;
}

// Value mappings' "type" is a TypeScript string enum in @grafana/schema, which
// a string literal cannot satisfy: it is written as the enum member whose
// value it is (an unknown value stays a string and fails the check).
async function dashboards([out, ...files]) {
  const { MappingType } = await import("@grafana/schema");
  const member = Object.fromEntries(Object.entries(MappingType).map(([k, v]) => [v, k]));
  const lines = ['import { type Dashboard, MappingType } from "@grafana/schema";'];
  files.forEach((f, i) => {
    const dashboard = JSON.parse(fs.readFileSync(f, "utf8"));
    // __inputs and __requires are the import's metadata, outside the model.
    for (const key of Object.keys(dashboard)) if (key.startsWith("__")) delete dashboard[key];
    const text = JSON.stringify(dashboard, function (key, value) {
      if (key === "type" && Array.isArray(this.options) === false && this.options && member[value]) {
        return `@@MappingType.${member[value]}@@`;
      }
      return value;
    }, 2).replace(/"@@(MappingType\.[A-Za-z]+)@@"/g, "$1");
    lines.push(`// ${f}\nexport const d${i}: Dashboard = ${text};`);
  });
  fs.writeFileSync(out, lines.join("\n") + "\n");
  console.log(`${files.length} dashboards written for tsc`);
  return 0;
}

const [cmd, ...args] = process.argv.slice(2);
const run = { values, objects, dashboards }[cmd];
if (!run) {
  console.error("usage: node validate.mjs values|objects|dashboards ...");
  process.exit(2);
}
process.exit(await run(args));
