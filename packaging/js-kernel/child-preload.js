"use strict";
// Loaded with `node --require` into nel's session process (where cells run).
//  * cells run with breakOnSigint: SIGINT stops a busy loop with an error and
//    the session (its globals) survives;
//  * dynamic import() works in cells (Node >= 20.12 / 21.7);
//  * SIGINT while a cell awaits a promise ends that cell with an error.
const vm = require("vm");
const path = require("path");
const url = require("url");
const Module = require("module");
const original = vm.runInThisContext;

// Node < 20.12 has no USE_MAIN_CONTEXT_DEFAULT_LOADER: resolve like require()
// from the current directory, then import() the file (ESM-only packages whose
// "exports" have no "require"/"default" condition are not found this way).
function importFromCwd(specifier) {
    let target = specifier;
    const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(specifier);
    if (!isUrl && !Module.builtinModules.includes(specifier)) {
        try {
            target = url.pathToFileURL(Module.createRequire(path.join(process.cwd(), "[cell]")).resolve(specifier)).href;
        } catch (e) {
            // leave it to import()
        }
    }
    return import(target);
}
const loader = (vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER) || importFromCwd;
vm.runInThisContext = function runInThisContext(code, options) {
    const opts = typeof options === "string" ? { filename: options } : Object.assign({}, options);
    if (opts.breakOnSigint === undefined && process.env.IJSX_BREAK !== "0") opts.breakOnSigint = true;
    if (opts.importModuleDynamically === undefined && process.env.IJSX_IMPORT !== "0") opts.importModuleDynamically = loader;
    return original.call(this, code, opts);
};
process.on("SIGINT", function onSigint() {
    const $$ = global.$$;
    if ($$ && typeof $$.sendError === "function") {
        const error = new Error("Execution interrupted");
        error.name = "KeyboardInterrupt";
        $$.sendError(error); // dropped by nel if the cell already finished
    }
});
// The experimental-feature warning of the loader would otherwise be the only
// stderr output of the first import() (stderr of this process is discarded anyway).
process.removeAllListeners("warning");
