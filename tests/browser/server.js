// Starts and stops the tidings server binary for the browser tests: the same harness as the
// JS client suite (only node built-ins, so no install in tests/js is needed).
module.exports = require('../js/server.js');
