// The page of index.html: a BookClient whose verified book is drawn as a
// ladder of the best 10 levels. Query parameters preset the form and connect
// at once: index.html?url=ws://localhost:8080/v1/ws&symbol=BTC-USD&depth=10
// (and updates=N to stop after N verified updates).
//
// window.example holds the running client, for tests and the console.

import { BookClient } from './client.js';

const ROWS = 10;
const MAX_LOG_LINES = 20;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$('url').value = params.get('url') || 'ws://localhost:8080/v1/ws';
$('symbol').value = params.get('symbol') || 'BTC-USD';
$('depth').value = params.get('depth') || '10';

function status(text, state) {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

function log(line) {
  const el = $('log');
  el.textContent = (line + '\n' + el.textContent).split('\n').slice(0, MAX_LOG_LINES).join('\n');
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function draw(what, c) {
  const rows = [];
  for (let i = 0; i < ROWS; i++) {
    const b = c.book.bids.levels[i], a = c.book.asks.levels[i];
    const tr = document.createElement('tr');
    tr.append(cell(b ? b[1] : '', 'bid'), cell(b ? b[0] : '', 'bid'), cell(a ? a[0] : '', 'ask'), cell(a ? a[1] : '', 'ask'));
    rows.push(tr);
  }
  $('ladder').replaceChildren(...rows);
  status(`${c.symbol}: verified at seq ${c.lastSeq} (${what})`, 'verified');
  $('stats').textContent = c.summary();
}

function connect() {
  if (window.example) window.example.stop();
  const c = new BookClient({
    url: $('url').value,
    symbol: $('symbol').value,
    depth: Number($('depth').value),
    updates: Number(params.get('updates') || 0),
    onBook: draw,
    onLog: (line) => {
      log(line);
      if (line.startsWith('resync') || line.startsWith('connection lost')) status(line, 'resyncing');
    },
    onDone: (err) => {
      $('stats').textContent = c.summary();
      if (err) status(err.message, 'error');
      else status(`${c.symbol}: stopped after ${c.stats.verified} verified updates`, 'done');
      c.done = { error: err ? err.message : null };
    },
  });
  window.example = c;
  status(`connecting to ${c.url}`, 'connecting');
  c.start();
}

$('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  connect();
});
if (params.has('url') || params.has('symbol')) connect();
