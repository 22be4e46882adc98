// Validates AsyncAPI documents (JSON files): first against the official
// AsyncAPI JSON Schema of the document's version (@asyncapi/specs), then
// with the AsyncAPI parser (@asyncapi/parser: references, IDs, channel and
// operation rules). Prints every finding; exits 1 if any file has an error,
// 2 on a usage error.
//
//   node tests/asyncapi/validate.mjs DOC.json...
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const require = createRequire(import.meta.url);
const specs = require('@asyncapi/specs');

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs DOC.json...');
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    console.log(`${file}: error: not JSON: ${e.message}`);
    failed = true;
    continue;
  }
  const schema = specs.schemas[doc.asyncapi];
  if (!schema) {
    console.log(`${file}: error: no AsyncAPI JSON Schema for version ${JSON.stringify(doc.asyncapi)}`);
    failed = true;
    continue;
  }
  // The schema bundles the JSON Schema meta-schemas, which Ajv already
  // has and cannot hold twice (the parser drops them the same way).
  const copy = JSON.parse(JSON.stringify(schema));
  delete copy.definitions['http://json-schema.org/draft-07/schema'];
  delete copy.definitions['http://json-schema.org/draft-04/schema'];
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
  addFormats(ajv);
  const validate = ajv.compile(copy);
  let errors = 0;
  if (!validate(doc)) {
    for (const e of validate.errors) {
      console.log(`${file}: error: schema ${doc.asyncapi}: ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
      errors++;
    }
  } else {
    console.log(`${file}: valid against the AsyncAPI ${doc.asyncapi} JSON Schema`);
  }
  const { document, diagnostics } = await parser.parse(text);
  for (const d of diagnostics) {
    const severity = ['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity;
    console.log(`${file}: ${severity}: parser ${d.code}: ${d.message} at /${d.path.join('/')}`);
    if (d.severity === DiagnosticSeverity.Error) errors++;
  }
  if (!document) {
    console.log(`${file}: error: the parser produced no document`);
    errors++;
  } else {
    console.log(`${file}: parsed: ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages`);
  }
  if (errors > 0) {
    console.log(`${file}: INVALID (${errors} errors)`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
