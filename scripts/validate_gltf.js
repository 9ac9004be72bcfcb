#!/usr/bin/env node
// Validate glTF/GLB files with Khronos's glTF-Validator (npm package gltf-validator, installed into
// the repo's node_modules by `scripts/setup.sh test`). Prints one JSON report per file on stdout,
// {file, errors, warnings, infos, hints, messages}; exit 1 when any file has an error or a warning.
//
//     node scripts/validate_gltf.js FILE.glb [FILE.glb...]
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "..", "node_modules", "gltf-validator"));

async function validate(file) {
  const data = new Uint8Array(fs.readFileSync(file));
  const report = await validator.validateBytes(data, {
    uri: path.basename(file),
    maxIssues: 0,
    // a GLB is self-contained: any external reference is an error in itself
    externalResourceFunction: (uri) => Promise.reject(new Error("external resource " + uri)),
  });
  const issues = report.issues;
  return {
    file,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    hints: issues.numHints,
    messages: issues.messages.map((m) => ({ code: m.code, severity: m.severity, pointer: m.pointer, message: m.message })),
  };
}

(async () => {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error("usage: node scripts/validate_gltf.js FILE.glb [FILE.glb...]");
    process.exit(2);
  }
  let failed = false;
  for (const file of files) {
    try {
      const result = await validate(file);
      failed = failed || result.errors > 0 || result.warnings > 0;
      console.log(JSON.stringify(result));
    } catch (err) {
      failed = true;
      console.log(JSON.stringify({ file, errors: 1, warnings: 0, messages: [{ code: "UNREADABLE", severity: 0, message: String(err) }] }));
    }
  }
  process.exit(failed ? 1 : 0);
})();
