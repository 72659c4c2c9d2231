'use strict';
// The Action's post step: see shim.js.
require('./shim').run(['action', 'post']);
