/* sar2opt-geo: drop the CommonJS shim globals once leaflet-side-by-side has registered L.control.sideBySide. */
delete window.module;
delete window.require;
