'use strict';
// The Action's main step: see shim.js.
require('./shim').run(['action', 'main']);
