'use strict';
// The Action's pre step: see shim.js.
require('./shim').run(['action', 'pre']);
