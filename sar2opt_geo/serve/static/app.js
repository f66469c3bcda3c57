/* sar2opt-geo serve: the page (map with swipe, chip translate, jobs, system). Talks only to its own server. */
'use strict';

const $ = (id) => document.getElementById(id);

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + ' ' + r.statusText));
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/* ------------------------------------------------------------------------------------------------ tabs */
function showTab(name) {
  document.querySelectorAll('.tab').forEach((b) => b.classList.toggle('active', b.dataset.tab === name));
  document.querySelectorAll('.panel').forEach((p) => p.classList.toggle('active', p.id === 'tab-' + name));
  if (name === 'map') map.invalidateSize();
  if (name === 'jobs') loadJobs();
  if (name === 'system') loadSystem();
}
document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => showTab(b.dataset.tab)));

/* ------------------------------------------------------------------------------------------------- map */
const map = L.map('map', { attributionControl: false, minZoom: 1, maxZoom: 22 });
map.setView([20, 0], 2);
L.control.scale({ imperial: false }).addTo(map);

const state = { scenes: [], scene: null, left: null, right: null, sbs: null, stats: null, loaded: { left: false, right: false } };
window.sar2opt = { map, state };

function layerInfo(name) {
  return state.scene ? state.scene.layers.find((l) => l.name === name) : null;
}

function sarQuery() {
  const q = new URLSearchParams({ stretch: $('stretch').value, cmap: $('cmap').value, mode: $('mode').value || 'b1' });
  if ($('stretch').value === 'db') { q.set('min', $('dbmin').value); q.set('max', $('dbmax').value); }
  return q.toString();
}

function tileLayer(name, side) {
  const info = layerInfo(name);
  let url = '/tiles/' + encodeURIComponent(state.scene.id) + '/' + name + '/{z}/{x}/{y}.png';
  if (info.kind === 'sar') url += '?' + sarQuery();
  const b = info.bounds;
  const layer = L.tileLayer(url, {
    bounds: L.latLngBounds([b[1], b[0]], [b[3], b[2]]),
    maxNativeZoom: info.maxzoom,
    maxZoom: 22,
    opacity: parseFloat($('opacity').value),
    keepBuffer: 1,
  });
  state.loaded[side] = false;
  layer.on('loading', () => { state.loaded[side] = false; });
  layer.on('load', () => { state.loaded[side] = true; });
  return layer;
}

function sideLabel(name) {
  const info = layerInfo(name);
  if (!info) return '';
  let text = info.label;
  if (info.kind === 'sar') {
    const mode = $('mode').value;
    text += mode === 'false' ? ' (VV/VH false colour)' : ' (' + (info.bands[parseInt(mode.slice(1), 10) - 1] || mode) + ', ' + ($('stretch').value === 'auto' ? 'auto p2–p98' : $('dbmin').value + '..' + $('dbmax').value + ' dB') + ')';
  }
  return text;
}

function render() {
  if (state.sbs) { state.swipe = state.sbs._range.value; state.sbs.remove(); state.sbs = null; }
  for (const side of ['left', 'right']) { if (state[side]) { map.removeLayer(state[side]); state[side] = null; } }
  if (!state.scene || !state.scene.layers.length) { $('label-left').textContent = 'no scene'; $('label-right').textContent = ''; return; }
  const ln = $('left').value, rn = $('right').value;
  state.left = tileLayer(ln, 'left').addTo(map);
  if (rn && rn !== ln) {
    state.right = tileLayer(rn, 'right').addTo(map);
    state.sbs = L.control.sideBySide(state.left, state.right).addTo(map);
    if (state.swipe !== undefined) { state.sbs._range.value = state.swipe; state.sbs._updateClip(); }  // keep the swipe where it was
    // a swipe drag ends with a mouseup over the map, which the browser turns into a map click: ignore that one
    L.DomEvent.on(state.sbs._range, 'mousedown touchstart', () => { state.swiping = true; });
    window.sar2opt.sbs = state.sbs;
  } else {
    state.loaded.right = true;
  }
  $('label-left').textContent = sideLabel(ln) + (state.right ? ' ◀' : '');
  $('label-right').textContent = state.right ? '▶ ' + sideLabel(rn) : '';
  $('label-right').style.display = state.right ? '' : 'none';
}

function zoomToScene() {
  if (!state.scene || !state.scene.bounds) return;
  const b = state.scene.bounds;
  map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
}

function option(value, text, selected) {
  const o = el('option', { value }, text);
  if (selected) o.selected = true;
  return o;
}

async function selectScene(id) {
  state.scene = state.scenes.find((s) => s.id === id) || null;
  $('scene').value = id;
  const names = state.scene ? state.scene.layers.map((l) => l.name) : [];
  const leftDefault = names.includes('sar') ? 'sar' : names[0];
  const rightDefault = names.includes('translated') ? 'translated' : (names.includes('optical') ? 'optical' : names[names.length - 1]);
  for (const [sel, def] of [['left', leftDefault], ['right', rightDefault]]) {
    $(sel).replaceChildren(...(state.scene ? state.scene.layers : []).map((l) => option(l.name, l.label, l.name === def)));
  }
  const sar = layerInfo('sar');
  $('sar-style').disabled = !sar;
  const modes = sar ? sar.bands.map((b, i) => option('b' + (i + 1), b, i === 0)) : [option('b1', 'band 1', true)];
  if (sar && sar.count >= 2) modes.push(option('false', sar.bands.slice(0, 2).join('/') + ' false colour', false));
  $('mode').replaceChildren(...modes);
  state.stats = null;
  if (sar) {  // not awaited: the map does not wait for the statistics (the server applies "auto" itself)
    getJSON('/api/scenes/' + encodeURIComponent(id) + '/stats').then((s) => {
      if (state.scene && state.scene.id === id) { state.stats = s; applyStretch(); }
    }).catch(() => { state.stats = null; });
  }
  applyStretch();
  render();
  zoomToScene();
}

function applyStretch() {
  const auto = $('stretch').value === 'auto';
  $('dbmin').disabled = $('dbmax').disabled = auto;
  if (auto && state.stats) {
    const band = Math.max(0, parseInt(($('mode').value || 'b1').slice(1), 10) - 1) || 0;
    const r = state.stats.auto[Math.min(band, state.stats.auto.length - 1)];
    $('dbmin').value = r[0]; $('dbmax').value = r[1];
  }
}

async function loadScenes(selectId) {
  state.scenes = await getJSON('/api/scenes');
  $('scene').replaceChildren(...state.scenes.map((s) => option(s.id, s.name + ' (' + s.layers.map((l) => l.name).join(', ') + ')', false)));
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('scene');
  const id = selectId || fromHash || (state.scenes[0] && state.scenes[0].id);
  if (id) await selectScene(id);
  else render();
}

$('scene').addEventListener('change', (e) => selectScene(e.target.value));
$('left').addEventListener('change', render);
$('right').addEventListener('change', render);
$('stretch').addEventListener('change', () => { applyStretch(); render(); });
$('mode').addEventListener('change', () => { applyStretch(); render(); });
for (const id of ['dbmin', 'dbmax', 'cmap']) $(id).addEventListener('change', render);
$('opacity').addEventListener('input', () => {
  const v = parseFloat($('opacity').value);
  for (const side of ['left', 'right']) if (state[side]) state[side].setOpacity(v);
});
$('zoom-scene').addEventListener('click', zoomToScene);

map.on('mousemove', (e) => { $('cursor').textContent = e.latlng.lat.toFixed(5) + ', ' + e.latlng.lng.toFixed(5); });
map.on('mouseout', () => { $('cursor').textContent = ''; });
document.addEventListener('mouseup', () => { if (state.swiping) setTimeout(() => { state.swiping = false; }, 0); });
document.addEventListener('touchend', () => { if (state.swiping) setTimeout(() => { state.swiping = false; }, 0); });
map.on('click', async (e) => {
  if (!state.scene || state.swiping) return;
  const q = new URLSearchParams({ lon: e.latlng.lng.toFixed(7), lat: e.latlng.lat.toFixed(7) });
  let text;
  try {
    const v = await getJSON('/api/scenes/' + encodeURIComponent(state.scene.id) + '/point?' + q);
    const lines = [v.lat.toFixed(5) + ', ' + v.lon.toFixed(5)];
    for (const [name, d] of Object.entries(v.layers)) {
      if (d.nodata) lines.push(name + ': nodata');
      else if (d.db) lines.push(name + ': ' + Object.entries(d.db).map(([b, x]) => b + ' ' + x.toFixed(2) + ' dB').join(', '));
      else if (d.rgb) lines.push(name + ': RGB ' + d.rgb.join(', '));
    }
    text = lines.join('\n');
  } catch (err) {
    text = 'outside the scene';
  }
  $('pixel').textContent = text;
  L.popup().setLatLng(e.latlng).setContent(el('pre', {}, text)).openOn(map);
});

/* ------------------------------------------------------------------------------------------- translate */
let chosenSample = null;

async function loadTranslateChoices() {
  const m = await getJSON('/api/models');
  $('model').replaceChildren(...m.models.map((x) => option(x.id, x.label + ' [' + x.kind + ']', x.id === 'bundled')));
  $('lora').replaceChildren(option('', 'none', true), ...m.adapters.map((x) => option(x.id, x.label, false)));
  const samples = await getJSON('/api/samples');
  $('samples').replaceChildren(...samples.map((s) => el('img', {
    src: s.url, alt: 'sample ' + s.index, title: 'sample ' + s.index, 'data-sample': s.index,
    onclick: (ev) => {
      chosenSample = s.index;
      $('file').value = '';
      document.querySelectorAll('#samples img').forEach((i) => i.classList.toggle('chosen', i === ev.target));
    },
  })));
}

$('file').addEventListener('change', () => {
  chosenSample = null;
  document.querySelectorAll('#samples img').forEach((i) => i.classList.remove('chosen'));
});

function showMessage(text, isError) {
  $('translate-msg').textContent = text;
  $('translate-msg').className = 'msg' + (isError ? ' error' : '');
}

async function pollJob(id) {
  for (;;) {
    const job = await getJSON('/api/translate/' + id);
    if (job.state === 'done' || job.state === 'failed') return job;
    showMessage(job.state + '…', false);
    await new Promise((r) => setTimeout(r, 400));
  }
}

$('translate-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const fd = new FormData();
  const f = $('file').files[0];
  if (f) fd.append('file', f);
  else if (chosenSample !== null) fd.append('sample', String(chosenSample));
  else { showMessage('choose a file or a sample', true); return; }
  fd.append('model', $('model').value);
  fd.append('lora', $('lora').value);
  fd.append('preprocess', $('preprocess').value);
  $('translate-go').disabled = true;
  $('translate-result').replaceChildren();
  try {
    showMessage('uploading…', false);
    const job = await pollJob((await getJSON('/api/translate', { method: 'POST', body: fd })).id);
    if (job.state === 'failed') { showMessage('failed: ' + job.error, true); return; }
    showMessage('done in ' + job.seconds + ' s (' + job.width + '×' + job.height + ' px, ' + job.model + ')', false);
    const figs = [
      el('figure', {}, el('img', { src: job.files['input.png'], alt: 'input', id: 'result-input' }), el('figcaption', {}, 'SAR input')),
      el('figure', {}, el('img', { src: job.files['result.png'], alt: 'result', id: 'result-output' }), el('figcaption', {}, 'translated')),
    ];
    const links = el('div', {}, el('a', { href: job.download, id: 'result-download', download: '' }, 'download ' + (job.kind === 'geotiff' ? 'COG' : 'PNG')));
    if (job.scene_id) {
      links.append(' · ', el('a', { href: '#scene=' + job.scene_id, onclick: async (e) => { e.preventDefault(); showTab('map'); await loadScenes(job.scene_id); } }, 'open in map'));
    }
    $('translate-result').replaceChildren(...figs, links);
  } catch (err) {
    showMessage(err.message, true);
  } finally {
    $('translate-go').disabled = false;
  }
});

/* ------------------------------------------------------------------------------------------------ jobs */
async function loadJobs() {
  let specs;
  try { specs = await getJSON('/api/jobs'); } catch (err) { $('jobs').replaceChildren(el('p', { class: 'error' }, err.message)); return; }
  if (!specs.length) { $('jobs').replaceChildren(el('p', {}, 'No job specs given (sar2opt-geo serve --jobs JOB.yaml).')); return; }
  $('jobs').replaceChildren(...specs.map((spec) => el('div', {},
    el('h3', {}, spec.spec),
    el('table', { class: 'jobs-table' },
      el('tr', {}, ...['scene', 'state', 'progress', 'error', 'output'].map((h) => el('th', {}, h))),
      ...spec.scenes.map((s) => el('tr', {},
        el('td', {}, s.key), el('td', { class: 'state-' + s.state }, s.state), el('td', {}, s.progress),
        el('td', { class: 'error' }, s.error || s.note || ''),
        el('td', {}, s.scene_id
          ? el('a', { href: '#scene=' + s.scene_id, class: 'open-map', onclick: async (e) => { e.preventDefault(); showTab('map'); await loadScenes(s.scene_id); } }, 'open in map')
          : '')))))));
}
$('jobs-refresh').addEventListener('click', loadJobs);
// running jobs move on: refresh the table every 5 s while it is shown
setInterval(() => { if ($('tab-jobs').classList.contains('active')) loadJobs(); }, 5000);

/* ---------------------------------------------------------------------------------------------- system */
function dl(obj) {
  const rows = [];
  for (const [k, v] of Object.entries(obj || {})) {
    const text = v === null || v === undefined ? '—' : (typeof v === 'object' ? JSON.stringify(v) : String(v));
    rows.push(el('tr', {}, el('th', {}, k), el('td', {}, text)));
  }
  return el('table', {}, ...rows);
}

async function loadSystem() {
  const q = new URLSearchParams({ model: $('model').value || 'bundled', lora: $('lora').value || '' });
  let s;
  try { s = await getJSON('/api/system?' + q); } catch (err) { $('system').replaceChildren(el('p', { class: 'error' }, err.message)); return; }
  const gpus = s.gpus.length ? s.gpus.map((g) => g.name + ' (' + g.memory_gb + ' GB)').join('; ') : 'none';
  const m = s.model;
  $('system').replaceChildren(
    el('h3', {}, 'Machine'),
    dl({ tool: s.tool, python: s.python, platform: s.platform, 'CPU cores': s.cpu_count, devices: s.devices.join(', '), 'default device': s.default_device, GPUs: gpus }),
    el('h3', {}, 'Versions'), dl(s.versions),
    el('h3', {}, 'Model: ' + m.label),
    dl({ kind: m.kind, name: m.name, architecture: m.architecture, 'arch args': m.arch_args, 'input bands': m.input_bands, radiometry: m.radiometry, preprocess: m.preprocess, provenance: m.provenance, lora: m.lora }),
    el('h3', {}, 'Adapter'), s.adapter ? dl(s.adapter) : el('p', {}, 'none'),
    s.skipped.length ? el('div', {}, el('h3', {}, 'Skipped at start-up'), el('ul', {}, ...s.skipped.map((x) => el('li', {}, x)))) : '',
  );
}

/* --------------------------------------------------------------------------------------------- startup */
(async () => {
  try {
    await loadScenes();
    await loadTranslateChoices();
  } catch (err) {
    $('label-left').textContent = 'error: ' + err.message;
  }
  window.sar2opt.ready = true;
})();
