#!/usr/bin/env node
"use strict";
// envd's JavaScript/TypeScript kernel: ijavascript 5.2.1's kernel
// (jp-kernel + nel) with
//   - a cell transpiler (TypeScript, top-level await, ESM import; transpile.js)
//   - awaitExecution: a cell whose value is a promise shows the resolved value
//   - interrupt that keeps state: SIGINT is handled in nel's session process
//     (child-preload.js); this process ignores it (ijavascript restarts the
//     session on SIGINT, losing every variable).
// usage: node kernel.js [--hide-undefined] [--protocol=5.1] CONNECTION_FILE
const fs = require("fs");
const path = require("path");
const nel = require("nel");
const Kernel = require("jp-kernel");
const { transpile } = require("./transpile.js");

// Tracebacks: drop the frames of the kernel's own machinery (vm, nel, sucrase).
const INTERNAL_FRAME = /\(node:vm|\(node:events|\(node:internal\/child_process|\[eval\]|child-preload\.js|[\/]sucrase[\/]|transpile\.js|at sigintHandlersWrap/;
const onMessage = nel.Session.prototype._onMessage;
nel.Session.prototype._onMessage = function (message) {
    const error = message && message.error;
    if (error && /^Script execution was interrupted/.test(error.evalue || "")) {
        error.ename = "KeyboardInterrupt"; // busy cell stopped by SIGINT (breakOnSigint)
        error.evalue = "Execution interrupted";
        error.traceback = ["KeyboardInterrupt: Execution interrupted"];
    }
    if (error && Array.isArray(error.traceback)) {
        error.traceback = error.traceback.filter((line) => !(/^\s+at /.test(line) && INTERNAL_FRAME.test(line)));
    }
    return onMessage.call(this, message);
};
// IOPub: every message gets a header date (jmp sends none; the protocol wants
// one); stream writes are coalesced (one message per 10 ms or 64 KiB instead
// of one per console.log), flushed before any other message so the order
// stream -> result/error -> idle holds; IOPub never drops (SNDHWM 0: a slow
// reader makes the kernel queue, as ipykernel's XPUB_NODROP makes it wait).
const jmp = require("jmp");
const uuid = require("uuid");
const STREAM_FLUSH_MS = 10;
const STREAM_FLUSH_CHARS = 64 * 1024;
function send(request, socket, messageType, content, metadata, protocolVersion) {
    const response = new jmp.Message();
    response.idents = request.idents;
    response.header = {
        msg_id: uuid.v4(),
        username: request.header.username,
        session: request.header.session,
        msg_type: messageType,
        date: new Date().toISOString(),
    };
    const version = protocolVersion || (request.header && request.header.version);
    if (version) response.header.version = version;
    response.parent_header = request.header;
    response.content = content || {};
    response.metadata = metadata || {};
    socket.send(response);
    return response;
}
const pendingStreams = new Map(); // request -> {socket, name, text, timer, version}
function flushStreams() {
    for (const [request, p] of pendingStreams) {
        clearTimeout(p.timer);
        send(request, p.socket, "stream", { name: p.name, text: p.text }, {}, p.version);
    }
    pendingStreams.clear();
}
jmp.Message.prototype.respond = function (socket, messageType, content, metadata, protocolVersion) {
    if (messageType === "stream") {
        const p = pendingStreams.get(this);
        if (p && p.name === content.name && p.socket === socket) {
            p.text += content.text;
            if (p.text.length >= STREAM_FLUSH_CHARS) flushStreams();
            return undefined;
        }
        flushStreams();
        pendingStreams.set(this, {
            socket: socket, name: content.name, text: content.text, version: protocolVersion,
            timer: setTimeout(flushStreams, STREAM_FLUSH_MS),
        });
        return undefined;
    }
    flushStreams();
    return send(this, socket, messageType, content, metadata, protocolVersion);
};
const bindSockets = Kernel.prototype._bindSockets;
Kernel.prototype._bindSockets = function () {
    this.iopubSocket.setsockopt(23, 0); // ZMQ_SNDHWM, before bind: pipes take it when peers connect
    return bindSockets.call(this);
};

// Cells run in nel's session process: preload our hooks there. Node < 20.12
// (Debian 12 ships 18) needs --experimental-vm-modules for import() in cells.
const vmConstants = require("vm").constants;
const childFlags = vmConstants && vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER ? [] : ["--experimental-vm-modules"];
nel.Session._args = childFlags.concat(["--require", path.join(__dirname, "child-preload.js")], nel.Session._args);

const args = process.argv.slice(2);
const connectionFile = args.filter((a) => !a.startsWith("--")).pop();
const protocolArg = args.find((a) => a.startsWith("--protocol="));
const protocolVersion = protocolArg ? protocolArg.slice("--protocol=".length) : "5.1";
const ijsVersion = require("ijavascript/package.json").version;

const config = {
    connection: JSON.parse(fs.readFileSync(connectionFile)),
    cwd: process.cwd(),
    hideExecutionResult: false,
    hideUndefined: args.includes("--hide-undefined"),
    protocolVersion: protocolVersion,
    transpile: process.env.IJSX_TRANSPILE === "0" ? undefined : transpile,
    kernelInfoReply: {
        protocol_version: protocolVersion,
        implementation: "ijavascript",
        implementation_version: ijsVersion,
        language_info: {
            name: "javascript",
            version: process.versions.node,
            mimetype: "application/javascript",
            file_extension: ".js",
        },
        banner: "IJavascript v" + ijsVersion + " (envd: TypeScript, top-level await, import)\n",
        help_links: [],
    },
    startupCallback: function () {},
};

// If the session process dies on its own (process.exit() in a cell, a crash,
// OOM), nel would queue every later request forever: exit instead, so the
// daemon sees a dead kernel, as with any other kernel. nel's own kill()
// (restart, shutdown) removes this listener first.
function watchSession(session) {
    session._server.on("exit", function (code, signal) {
        process.stderr.write("ijs: session process exited (" + (signal || code) + "); exiting\n");
        process.exit(1);
    });
}
const restartSession = nel.Session.prototype.restart;
nel.Session.prototype.restart = function (signal, restartCB) {
    return restartSession.call(this, signal, function () {
        watchSession(this);
        if (restartCB) restartCB.apply(this, arguments);
    }.bind(this));
};

const kernel = new Kernel(config);
watchSession(kernel.session);
// Keep these settings across kernel.restart() (nel re-creates the session).
kernel.session._nelConfig.awaitExecution = true;
kernel.session.execute("$$.config.awaitExecution = true;");

// jp-kernel ignores `silent`: honour it as ipykernel does (no execute_input,
// no execute_result, execution_count unchanged; streams and errors still sent).
const executeRequest = kernel.handlers.execute_request;
kernel.handlers.execute_request = function execute_request(request) {
    if (!request.content.silent) return executeRequest.call(this, request);
    const self = this;
    const stream = (name) => (data) =>
        request.respond(self.iopubSocket, "stream", { name: name, text: data.toString() });
    this.session.execute(request.content.code, {
        beforeRun() { request.respond(self.iopubSocket, "status", { execution_state: "busy" }); },
        afterRun() { request.respond(self.iopubSocket, "status", { execution_state: "idle" }); },
        onSuccess() {
            request.respond(self.shellSocket, "execute_reply", {
                status: "ok", execution_count: self.executionCount, payload: [], user_expressions: {},
            });
        },
        onError(result) {
            const e = result.error;
            request.respond(self.shellSocket, "execute_reply", {
                status: "error", execution_count: self.executionCount, ename: e.ename, evalue: e.evalue, traceback: e.traceback,
            });
            request.respond(self.iopubSocket, "error", {
                execution_count: self.executionCount, ename: e.ename, evalue: e.evalue, traceback: e.traceback,
            });
        },
        onStdout: stream("stdout"),
        onStderr: stream("stderr"),
        onDisplay() {},
        onRequest() {},
    });
};

// Same workaround as ijavascript (n-riesco/ijavascript#97).
const vm = require("vm");
kernel.handlers.is_complete_request = function is_complete_request(request) {
    request.respond(this.iopubSocket, "status", { execution_state: "busy" });
    let content;
    try {
        new vm.Script(transpile(request.content.code));
        content = { status: "complete" };
    } catch (err) {
        content = { status: "incomplete", indent: "" };
    }
    request.respond(this.shellSocket, "is_complete_reply", content, {}, this.protocolVersion);
    request.respond(this.iopubSocket, "status", { execution_state: "idle" });
};

// jupyter_client sends SIGINT to the whole process group: the session process
// handles it (a busy cell throws, an awaiting cell is ended; globals survive).
// If the session process is stuck where SIGINT cannot reach the JS (a busy
// loop in a timer callback), the running request is failed and the session
// restarted after HARD_INTERRUPT_MS: state is lost, but the kernel answers.
const HARD_INTERRUPT_MS = Number(process.env.IJS_HARD_INTERRUPT_MS || 1500);
process.on("SIGINT", function onSigint() {
    const session = kernel.session;
    const task = session._currentTask;
    if (!task) return;
    setTimeout(function () {
        if (kernel.session !== session || session._currentTask !== task) return;
        const evalue = "Execution interrupted: the JavaScript session did not respond " +
            "and was restarted (all variables were lost)";
        const fail = function (t) {
            const error = { ename: "KeyboardInterrupt", evalue: evalue, traceback: ["KeyboardInterrupt: " + evalue] };
            if (t.onError) t.onError({ error: error });
            if (t.afterRun) t.afterRun();
        };
        const queued = session._tasks;
        session._tasks = [];
        session._currentTask = null;
        fail(task);
        kernel.restart(function () {
            // requests queued behind the stuck one run in the new session
            queued.forEach(function (t) { kernel.session._run(t); });
        });
    }, HARD_INTERRUPT_MS);
});
