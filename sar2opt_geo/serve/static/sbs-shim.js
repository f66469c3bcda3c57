/* CommonJS shim (sar2opt-geo, written by hand): the npm package leaflet-side-by-side ships its unbuilt
   CommonJS source (index.js); this lets it run in the page unmodified, with window.L as 'leaflet' and its
   CSS files loaded by <link> tags instead of require(). Removed again by sbs-shim-end.js. */
window.module = { exports: {} };
window.require = function (name) { return name === 'leaflet' ? window.L : {}; };
