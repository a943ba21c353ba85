// The depth chart: cumulative bid and ask size against price, drawn on a
// canvas at device resolution, with a hover read-out.

import { num, compact } from './format.js';

const BID = '#2ebd85', ASK = '#f6465d';
const BID_FILL = 'rgba(46,189,133,0.18)', ASK_FILL = 'rgba(246,70,93,0.18)';
const GRID = 'rgba(132,142,156,0.12)', TEXT = '#848e9c';
const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
const PAD = { l: 8, r: 56, t: 10, b: 20 };

export class DepthChart {
  constructor(canvas, tip) {
    this.canvas = canvas;
    this.tip = tip;
    this.ctx = canvas.getContext('2d');
    this.bids = [];
    this.asks = [];
    this.pxDec = 2;
    this.hover = null; // {x, y} in CSS pixels
    this.geom = null;
    new ResizeObserver(() => this.draw()).observe(canvas);
    canvas.addEventListener('mousemove', (e) => {
      const r = canvas.getBoundingClientRect();
      this.hover = { x: e.clientX - r.left, y: e.clientY - r.top };
      this.draw();
    });
    canvas.addEventListener('mouseleave', () => { this.hover = null; this.draw(); });
  }

  /** set takes the book's levels (best first, with numeric px and sz) and redraws. */
  set(bids, asks, pxDec) {
    this.bids = bids;
    this.asks = asks;
    this.pxDec = pxDec;
    this.draw();
  }

  draw() {
    const c = this.canvas, ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (w === 0 || h === 0) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = FONT;
    const bids = this.bids, asks = this.asks;
    if (!bids.length && !asks.length) {
      ctx.fillStyle = TEXT;
      ctx.textAlign = 'center';
      ctx.fillText('Waiting for the book…', w / 2, h / 2);
      this.tip.hidden = true;
      return;
    }
    // Cumulative steps, best first.
    const cum = (side) => { let t = 0; return side.map((l) => ({ px: l.px, t: (t += l.sz) })); };
    const cb = cum(bids), ca = cum(asks);
    const bestBid = bids.length ? bids[0].px : asks[0].px;
    const bestAsk = asks.length ? asks[0].px : bids[0].px;
    const mid = (bestBid + bestAsk) / 2;
    const lo = bids.length ? bids[bids.length - 1].px : mid;
    const hi = asks.length ? asks[asks.length - 1].px : mid;
    const half = Math.max(mid - lo, hi - mid) || Math.abs(mid) * 0.001 || 1;
    const x0 = mid - half * 1.02, x1 = mid + half * 1.02;
    const maxT = Math.max(cb.length ? cb[cb.length - 1].t : 0, ca.length ? ca[ca.length - 1].t : 0) * 1.1 || 1;
    const pw = w - PAD.l - PAD.r, ph = h - PAD.t - PAD.b;
    const X = (px) => PAD.l + ((px - x0) / (x1 - x0)) * pw;
    const Y = (t) => PAD.t + ph - (t / maxT) * ph;
    this.geom = { X, Y, x0, x1, maxT, pw, ph, cb, ca, mid };

    // Grid and axes.
    ctx.strokeStyle = GRID;
    ctx.lineWidth = 1;
    ctx.fillStyle = TEXT;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    const step = niceStep(maxT / 4);
    for (let t = 0; t <= maxT; t += step) {
      const y = Math.round(Y(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(PAD.l, y); ctx.lineTo(PAD.l + pw, y); ctx.stroke();
      if (t > 0) ctx.fillText(compact(t), PAD.l + pw + 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let i = 0; i <= 4; i++) {
      const px = x0 + ((x1 - x0) / 4) * i;
      ctx.fillText(num(px, this.pxDec), Math.min(Math.max(X(px), PAD.l + 30), PAD.l + pw - 30), PAD.t + ph + 5);
    }

    // Bids: a step area from the best bid to the left; asks to the right.
    const area = (steps, dir, line, fill) => {
      if (!steps.length) return;
      ctx.beginPath();
      let x = X(steps[0].px);
      ctx.moveTo(x, Y(0));
      let prevT = 0;
      for (const s of steps) {
        const nx = X(s.px);
        ctx.lineTo(nx, Y(prevT));
        ctx.lineTo(nx, Y(s.t));
        prevT = s.t;
        x = nx;
      }
      const edge = dir < 0 ? PAD.l : PAD.l + pw;
      ctx.lineTo(edge, Y(prevT));
      ctx.lineTo(edge, Y(0));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.strokeStyle = line;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    };
    area(cb, -1, BID, BID_FILL);
    area(ca, 1, ASK, ASK_FILL);

    // Mid price.
    const mx = Math.round(X(mid)) + 0.5;
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = 'rgba(234,236,239,0.35)';
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(mx, PAD.t); ctx.lineTo(mx, PAD.t + ph); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = '#eaecef';
    ctx.textBaseline = 'top';
    ctx.fillText('mid ' + num(mid, this.pxDec + 1), mx, PAD.t);

    this.drawHover();
  }

  drawHover() {
    const g = this.geom, hv = this.hover, ctx = this.ctx;
    if (!g || !hv || hv.x < PAD.l || hv.x > PAD.l + g.pw) { this.tip.hidden = true; return; }
    const px = g.x0 + ((hv.x - PAD.l) / g.pw) * (g.x1 - g.x0);
    const bidSide = px < g.mid;
    const steps = bidSide ? g.cb : g.ca;
    // Cumulative size available at px: the last step whose price is reached.
    let t = 0;
    for (const s of steps) {
      if (bidSide ? s.px >= px : s.px <= px) t = s.t; else break;
    }
    const x = Math.round(hv.x) + 0.5, y = Math.round(g.Y(t)) + 0.5;
    ctx.strokeStyle = 'rgba(234,236,239,0.5)';
    ctx.setLineDash([2, 3]);
    ctx.beginPath(); ctx.moveTo(x, PAD.t); ctx.lineTo(x, PAD.t + g.ph); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(PAD.l, y); ctx.lineTo(PAD.l + g.pw, y); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = bidSide ? BID : ASK;
    ctx.beginPath(); ctx.arc(x, y, 3, 0, Math.PI * 2); ctx.fill();
    const tip = this.tip;
    tip.hidden = false;
    tip.innerHTML = '';
    const row = (k, v) => { const d = document.createElement('div'); d.innerHTML = '<span></span><b></b>'; d.firstChild.textContent = k; d.lastChild.textContent = v; tip.append(d); };
    row('Price', num(px, this.pxDec));
    row(bidSide ? 'Bids ≥ price' : 'Asks ≤ price', compact(t));
    row('Distance', num(((px - g.mid) / g.mid) * 100, 3) + '%');
    const tw = tip.offsetWidth;
    tip.style.left = (hv.x + 14 + tw > this.canvas.clientWidth ? hv.x - tw - 14 : hv.x + 14) + 'px';
    tip.style.top = Math.max(4, hv.y - 30) + 'px';
  }
}

/** niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten. */
function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}
