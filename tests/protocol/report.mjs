// Reads the JSON report mocha wrote for one suite and fails unless every test of the suite's
// file ran and passed: a failure, a skipped (pending) test, or fewer tests run than the file
// declares (a suite that ran nothing, a failing hook that skipped the rest) fails.
//
//   node report.mjs SUITE_FILE REPORT.json NAME
import { readFileSync } from "node:fs";

const [suiteFile, reportFile, name] = process.argv.slice(2);
const declared = (readFileSync(suiteFile, "utf8").match(/^\s*it\(/gm) ?? []).length;
let report;
try {
  report = JSON.parse(readFileSync(reportFile, "utf8"));
} catch (e) {
  console.log(`${name}: no report at ${reportFile} (${e.message})`);
  process.exit(1);
}
const { stats } = report;
for (const t of report.tests) {
  const status = t.err && Object.keys(t.err).length ? "FAIL" : t.duration === undefined ? "SKIP" : "ok  ";
  console.log(`  ${status} ${t.fullTitle}${t.duration === undefined ? "" : ` (${t.duration} ms)`}`);
}
for (const t of report.failures) {
  console.log(`\n${name}: FAILED: ${t.fullTitle}\n  ${t.err.message ?? ""}\n${t.err.stack ?? ""}`);
}
console.log(
  `${name}: ${declared} tests in the suite, ${stats.tests} run, ${stats.passes} passed, ` +
    `${stats.failures} failed, ${stats.pending} skipped (${stats.duration} ms)`,
);
if (declared === 0 || stats.tests !== declared || stats.passes !== declared ||
  stats.failures !== 0 || stats.pending !== 0) {
  console.log(`${name}: every test of the suite must run and pass`);
  process.exit(1);
}
