// The price chart: candles and volume built in the browser from the live
// trades, drawn by TradingView Lightweight Charts (vendor/, a classic script
// that defines window.LightweightCharts).

const UP = '#2ebd85', DOWN = '#f6465d';
const MAX_TRADES = 20000; // per symbol kept for rebuilding candles

export class PriceChart {
  constructor(el, emptyEl) {
    this.el = el;
    this.emptyEl = emptyEl;
    this.interval = 5; // seconds per candle
    this.symbol = '';
    this.trades = new Map(); // symbol -> [{t (s), px, sz, buy}]
    this.last = null; // the candle being built
    this.pxDec = 2;
    const LW = window.LightweightCharts;
    this.ok = !!LW;
    if (!this.ok) {
      emptyEl.textContent = 'Chart library failed to load';
      return;
    }
    this.chart = LW.createChart(el, {
      autoSize: true,
      layout: { background: { type: 'solid', color: 'transparent' }, textColor: '#848e9c', fontSize: 11, attributionLogo: true },
      grid: { vertLines: { color: 'rgba(132,142,156,0.08)' }, horzLines: { color: 'rgba(132,142,156,0.08)' } },
      rightPriceScale: { borderColor: 'rgba(132,142,156,0.2)', scaleMargins: { top: 0.08, bottom: 0.24 } },
      timeScale: { borderColor: 'rgba(132,142,156,0.2)', timeVisible: true, secondsVisible: true, rightOffset: 4, barSpacing: 8 },
      crosshair: { mode: 0 },
      localization: {
        timeFormatter: (t) => new Date(t * 1000).toLocaleTimeString('en-GB', { hour12: false }),
        priceFormatter: (p) => p.toLocaleString('en-US', { minimumFractionDigits: this.pxDec, maximumFractionDigits: this.pxDec }),
      },
    });
    this.candles = this.chart.addSeries(LW.CandlestickSeries, {
      upColor: UP, downColor: DOWN, borderUpColor: UP, borderDownColor: DOWN, wickUpColor: UP, wickDownColor: DOWN,
    });
    this.volume = this.chart.addSeries(LW.HistogramSeries, {
      priceScaleId: 'vol', priceFormat: { type: 'volume' }, lastValueVisible: false, priceLineVisible: false,
    });
    this.chart.priceScale('vol').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  }

  /** add records a trade of any symbol; it is drawn when it is the shown symbol's. */
  add(symbol, tsMicros, px, sz, buy) {
    let list = this.trades.get(symbol);
    if (!list) this.trades.set(symbol, (list = []));
    const tr = { t: tsMicros / 1e6, px, sz, buy };
    list.push(tr);
    if (list.length > MAX_TRADES) list.splice(0, list.length - MAX_TRADES * 0.9);
    if (symbol !== this.symbol || !this.ok) return;
    const bucket = Math.floor(tr.t / this.interval) * this.interval;
    const c = this.last;
    if (c && bucket < c.time) return; // late trade: it is in the history for the next rebuild
    if (c && bucket === c.time) {
      c.high = Math.max(c.high, px);
      c.low = Math.min(c.low, px);
      c.close = px;
      c.vol += sz;
    } else {
      this.last = { time: bucket, open: c ? c.close : px, high: px, low: px, close: px, vol: sz };
      if (c) { this.last.high = Math.max(px, this.last.open); this.last.low = Math.min(px, this.last.open); }
    }
    this.push(this.last);
    this.emptyEl.hidden = true;
  }

  push(c) {
    this.candles.update({ time: c.time, open: c.open, high: c.high, low: c.low, close: c.close });
    this.volume.update({ time: c.time, value: c.vol, color: c.close >= c.open ? 'rgba(46,189,133,0.45)' : 'rgba(246,70,93,0.45)' });
  }

  /** show switches the chart to a symbol and candle interval, rebuilding from the kept trades. */
  show(symbol, interval, pxDec) {
    this.symbol = symbol;
    this.interval = interval;
    this.setPrecision(pxDec);
    if (!this.ok) return;
    const bars = [], vols = [];
    let c = null;
    const list = (this.trades.get(symbol) || []).slice().sort((a, b) => a.t - b.t);
    for (const tr of list) {
      const bucket = Math.floor(tr.t / interval) * interval;
      if (c && bucket === c.time) {
        c.high = Math.max(c.high, tr.px); c.low = Math.min(c.low, tr.px); c.close = tr.px; c.vol += tr.sz;
        continue;
      }
      const open = c ? c.close : tr.px;
      c = { time: bucket, open, high: Math.max(open, tr.px), low: Math.min(open, tr.px), close: tr.px, vol: tr.sz };
      bars.push(c);
    }
    for (const b of bars) vols.push({ time: b.time, value: b.vol, color: b.close >= b.open ? 'rgba(46,189,133,0.45)' : 'rgba(246,70,93,0.45)' });
    this.candles.setData(bars.map((b) => ({ time: b.time, open: b.open, high: b.high, low: b.low, close: b.close })));
    this.volume.setData(vols);
    this.last = c;
    this.emptyEl.hidden = bars.length > 0;
    this.chart.timeScale().scrollToRealTime();
  }

  setPrecision(pxDec) {
    if (!this.ok || pxDec === this.pxDec) return;
    this.pxDec = pxDec;
    this.candles.applyOptions({ priceFormat: { type: 'price', precision: pxDec, minMove: 10 ** -pxDec } });
  }
}
