"use strict";
// Cell transpiler of envd's JavaScript/TypeScript kernel (kernel.js).
//
//  1. TypeScript -> JavaScript with sucrase (types stripped, imports kept as
//     written: keepUnusedImports, so `import fs ...` in one cell and `fs` in
//     the next still works).
//  2. REPL rewrite of the top level with acorn:
//     - `import x from "m"`      -> `var x = (await import("m")).default`
//       (named/namespace/side-effect imports likewise; CommonJS modules come
//       through Node's ESM interop, so `.default` is module.exports)
//     - `export` keywords dropped
//     - let/const/class declarations become `var`, so a cell can be re-run
//       (Deno's REPL allows re-declaration too)
//     - a cell with top-level await is wrapped in an async IIFE; its
//       declarations are hoisted as globals and its last expression returned;
//       nel (awaitExecution) awaits the promise and shows the value.
// Cells that do not parse are passed on untouched: V8 then reports the
// SyntaxError itself, as for plain ijavascript.

const sucrase = require("sucrase");
const acorn = require("acorn");

// sucrase drops value namespaces silently and leaves decorators to V8 (which
// has none yet): such cells go through TypeScript's own transpiler, loaded on
// first use (~0.5 s, ~50 MB in this process) if the `typescript` package is there.
const NEEDS_TSC = /^\s*(export\s+)?(namespace|module)\s+[A-Za-z_$][\w$.]*\s*\{|(^|[\s;({,])@[A-Za-z_$]/m;
let ts = null;
function tscStrip(code) {
    if (ts === null) {
        try {
            ts = require("typescript");
        } catch (e) {
            ts = undefined;
        }
    }
    if (!ts) {
        const error = new SyntaxError("TypeScript namespaces and decorators need the `typescript` package in the kernel");
        error.stack = "SyntaxError: " + error.message;
        throw error;
    }
    const out = ts.transpileModule(code, {
        reportDiagnostics: true,
        compilerOptions: {
            target: ts.ScriptTarget.ES2022,
            module: ts.ModuleKind.Preserve,
            verbatimModuleSyntax: true,
            isolatedModules: true,
        },
    });
    const errors = (out.diagnostics || []).filter((d) => d.category === ts.DiagnosticCategory.Error);
    if (errors.length) {
        const d = errors[0];
        const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : null;
        const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n") +
            (where ? ` (${where.line + 1}:${where.character + 1})` : "");
        const error = new SyntaxError(msg);
        error.stack = "SyntaxError: " + msg;
        throw error;
    }
    return out.outputText;
}

function stripTypes(code) {
    if (NEEDS_TSC.test(code)) return tscStrip(code);
    return sucrase.transform(code, {
        transforms: ["typescript"],
        disableESTransforms: true,
        keepUnusedImports: true,
        preserveDynamicImport: true,
    }).code;
}

function isFunction(node) {
    return node.type === "FunctionDeclaration" || node.type === "FunctionExpression" ||
        node.type === "ArrowFunctionExpression";
}

// Does the subtree contain `await` (or for-await) outside any nested function?
function hasTopLevelAwait(node) {
    let found = false;
    (function walk(n) {
        if (found || !n || typeof n.type !== "string") return;
        if (n.type === "AwaitExpression" || (n.type === "ForOfStatement" && n.await)) {
            found = true;
            return;
        }
        if (isFunction(n)) return;
        if (n.type === "MethodDefinition" || n.type === "PropertyDefinition" || n.type === "StaticBlock") {
            // class bodies: computed keys could await, bodies cannot
            if (n.computed) walk(n.key);
            return;
        }
        for (const key of Object.keys(n)) {
            if (key === "type" || key === "start" || key === "end") continue;
            const v = n[key];
            if (Array.isArray(v)) v.forEach(walk);
            else if (v && typeof v.type === "string") walk(v);
        }
    })(node);
    return found;
}

function patternNames(p, out) {
    if (!p) return out;
    switch (p.type) {
        case "Identifier": out.push(p.name); break;
        case "ObjectPattern": p.properties.forEach((q) => patternNames(q.type === "RestElement" ? q.argument : q.value, out)); break;
        case "ArrayPattern": p.elements.forEach((q) => patternNames(q, out)); break;
        case "RestElement": patternNames(p.argument, out); break;
        case "AssignmentPattern": patternNames(p.left, out); break;
    }
    return out;
}

function importCode(node, src) {
    const spec = src.slice(node.source.start, node.source.end);
    const load = `(await import(${spec}))`;
    if (node.specifiers.length === 0) return { code: `await import(${spec});`, names: [] };
    const names = [];
    const parts = [];
    const named = [];
    for (const s of node.specifiers) {
        names.push(s.local.name);
        if (s.type === "ImportDefaultSpecifier") parts.push(`${s.local.name} = __ijs_m.default`);
        else if (s.type === "ImportNamespaceSpecifier") parts.push(`${s.local.name} = __ijs_m`);
        else {
            const imported = s.imported.type === "Literal" ? JSON.stringify(s.imported.value) : s.imported.name;
            named.push(`${imported}: ${s.local.name}`);
        }
    }
    if (named.length) parts.push(`{ ${named.join(", ")} } = __ijs_m`);
    // one import() per statement; __ijs_m is a scratch global
    return { code: `__ijs_m = ${load}; ${parts.map((p) => "(" + p + ");").join(" ")}`, names };
}

function rewrite(js) {
    let ast;
    try {
        ast = acorn.parse(js, {
            ecmaVersion: "latest",
            sourceType: "script",
            allowImportExportEverywhere: true,
            allowAwaitOutsideFunction: true,
            allowHashBang: true,
        });
    } catch (e) {
        return js; // let V8 report it
    }
    const body = ast.body;
    const asyncCell = body.some((n) => n.type === "ImportDeclaration") || hasTopLevelAwait(ast);
    const hoisted = new Set();
    const fnHoist = [];
    const out = [];
    let last = 0;
    const emit = (upto) => { out.push(js.slice(last, upto)); };

    body.forEach((stmt0, i) => {
        let stmt = stmt0;
        emit(stmt.start);
        last = stmt.start;
        const isLast = i === body.length - 1;
        if (stmt.type === "ImportDeclaration") {
            const r = importCode(stmt, js);
            r.names.forEach((n) => hoisted.add(n));
            hoisted.add("__ijs_m");
            out.push(r.code);
            last = stmt.end;
            return;
        }
        if (stmt.type === "ExportNamedDeclaration" && stmt.declaration) {
            last = stmt.declaration.start; // drop `export `
            stmt = stmt.declaration;
        } else if (stmt.type === "ExportNamedDeclaration") {
            last = stmt.end; // `export { a, b }`: nothing to run
            return;
        } else if (stmt.type === "ExportDefaultDeclaration") {
            last = stmt.declaration.start;
            stmt = stmt.declaration;
            if (stmt.type !== "FunctionDeclaration" && stmt.type !== "ClassDeclaration") {
                out.push(js.slice(stmt.start, stmt.end) + ";");
                last = stmt0.end;
                return;
            }
        }
        if (stmt.type === "VariableDeclaration") {
            if (!asyncCell) {
                out.push("var");
                last = stmt.start + stmt.kind.length;
                return;
            }
            const assigns = [];
            for (const d of stmt.declarations) {
                patternNames(d.id, []).forEach((n) => hoisted.add(n));
                if (d.init) assigns.push(`(${js.slice(d.id.start, d.id.end)} = ${js.slice(d.init.start, d.init.end)})`);
                else if (stmt.kind !== "var") assigns.push(`(${js.slice(d.id.start, d.id.end)} = undefined)`);
            }
            out.push(assigns.length ? assigns.join(", ") + ";" : ";");
            last = stmt.end;
            return;
        }
        if (stmt.type === "ClassDeclaration" && stmt.id) {
            const name = stmt.id.name;
            if (!asyncCell) {
                out.push(`var ${name} = ${js.slice(stmt.start, stmt.end)};`);
            } else {
                hoisted.add(name);
                out.push(`${name} = ${js.slice(stmt.start, stmt.end)};`);
            }
            last = stmt.end;
            return;
        }
        if (stmt.type === "FunctionDeclaration" && stmt.id && asyncCell) {
            hoisted.add(stmt.id.name);
            fnHoist.push(stmt.id.name);
            return; // kept in place; exported to the global at the IIFE start
        }
        if (stmt.type === "ExpressionStatement" && isLast && asyncCell) {
            out.push(`return (${js.slice(stmt.expression.start, stmt.expression.end)});`);
            last = stmt.end;
            return;
        }
    });
    emit(js.length);
    if (!asyncCell) return out.join("");
    const pre = hoisted.size ? `var ${[...hoisted].join(", ")}; ` : "";
    const exportFns = fnHoist.map((n) => `globalThis[${JSON.stringify(n)}] = ${n};`).join(" ");
    return `${pre}(async () => { ${exportFns}\n${out.join("")}\n})()`;
}

function parses(js) {
    try {
        acorn.parse(js, { ecmaVersion: "latest", sourceType: "script", allowImportExportEverywhere: true,
            allowAwaitOutsideFunction: true, allowHashBang: true });
        return true;
    } catch (e) {
        return false;
    }
}

function transpile(code) {
    let js;
    try {
        js = stripTypes(code);
    } catch (tsError) {
        // Valid JavaScript the TypeScript grammar rejects (rare): run it as JS.
        if (parses(code)) return rewrite(code);
        throw tsError;
    }
    return rewrite(js);
}

module.exports = { transpile, stripTypes, rewrite };

if (require.main === module) {
    const src = require("fs").readFileSync(0, "utf8");
    process.stdout.write(transpile(src) + "\n");
}
