// Scenario 5: the dev server `npm run dev` starts.
const http = require('http');
const port = Number(process.env.PORT);
http
  .createServer((req, res) => res.end('ok'))
  .listen(port, '127.0.0.1', () => console.log(`dev server listening on ${port}`));
