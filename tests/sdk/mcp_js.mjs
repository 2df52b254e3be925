// Drives the official MCP TypeScript SDK (@modelcontextprotocol/sdk 1.32.2) over Streamable
// HTTP through a plan and prints one JSON line per step, then a summary line: the same plan
// format and records as mcp_py.py (see there). The SDK speaks the stateful protocol only
// (initialize, Mcp-Session-Id; newest version 2025-11-25), so `mode` is ignored.
//
// `connect.composio_session` creates the session with @composio/core
// (`composio.create(userId, { mcp: true })`, COMPOSIO_BASE_URL and COMPOSIO_API_KEY from the
// environment); the MCP client then uses exactly `session.mcp.url` and `session.mcp.headers`.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const PLAN = JSON.parse(process.env.MCP_PLAN);
const TIMEOUT_MS = (PLAN.timeout_s ?? 20) * 1000;

const emit = (record) => process.stdout.write(JSON.stringify(record) + '\n');

function errorInfo(e) {
  const info = { type: e?.name ?? typeof e, message: String(e?.message ?? e).slice(0, 800) };
  if (e?.code !== undefined) info.code = e.code;
  return info;
}

function callResult(r) {
  const text = (r.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('');
  return { isError: Boolean(r.isError), text, structuredContent: r.structuredContent ?? null };
}

async function composioSession(spec) {
  const { Composio } = await import('@composio/core');
  const warnings = [];
  const origWarn = console.warn;
  console.warn = (...args) => warnings.push(args.map(String).join(' '));
  try {
    const composio = new Composio({
      apiKey: process.env.COMPOSIO_API_KEY,
      baseURL: process.env.COMPOSIO_BASE_URL,
      allowTracking: false,
      disableVersionCheck: true,
    });
    const config = { mcp: true };
    if (spec.toolkits?.length) config.toolkits = spec.toolkits;
    const session = await composio.create(spec.user_id, config);
    const headers = Object.fromEntries(
      Object.entries(session.mcp.headers ?? {}).filter(([, v]) => v !== undefined && v !== null)
    );
    return {
      url: session.mcp.url,
      headers,
      seen: {
        session_id: session.sessionId,
        mcp_url: session.mcp.url,
        mcp_type: session.mcp.type,
        header_names: Object.keys(headers).sort(),
        warnings,
      },
    };
  } finally {
    console.warn = origWarn;
  }
}

async function runStep(client, s) {
  const { name, op } = s;
  try {
    let result;
    if (op === 'list_tools') {
      const r = await client.listTools(undefined, { timeout: TIMEOUT_MS });
      result = { tools: r.tools.map((t) => t.name) };
    } else if (op === 'call') {
      const r = await client.callTool({ name: s.tool, arguments: s.arguments ?? {} }, undefined, {
        timeout: TIMEOUT_MS,
      });
      result = callResult(r);
    } else if (op === 'call_and_leave') {
      // Start the call, give the server `after_ms` to start answering, then walk away: the SDK
      // aborts the request (and closes its stream).
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(new Error('left')), s.after_ms ?? 300);
      let left = false;
      try {
        await client.callTool({ name: s.tool, arguments: s.arguments ?? {} }, undefined, {
          signal: ac.signal,
          timeout: TIMEOUT_MS,
        });
      } catch (e) {
        if (!ac.signal.aborted) throw e;
        left = true;
      } finally {
        clearTimeout(timer);
      }
      result = { left };
    } else if (op === 'ping') {
      await client.ping({ timeout: TIMEOUT_MS });
      result = {};
    } else {
      throw new Error(`unknown op ${op}`);
    }
    emit({ step: name, outcome: 'success', result });
  } catch (e) {
    emit({ step: name, outcome: 'error', error: errorInfo(e) });
  }
}

async function run() {
  const connect = PLAN.connect;
  let url;
  let headers;
  if (connect.composio_session) {
    try {
      const s = await composioSession(connect.composio_session);
      ({ url, headers } = s);
      emit({ step: 'session', outcome: 'success', result: s.seen });
    } catch (e) {
      emit({ step: 'session', outcome: 'error', error: errorInfo(e) });
      return;
    }
  } else {
    url = connect.url;
    headers = connect.headers ?? {};
  }
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: 'entitygate-mcp-js', version: '1.0.0' });
  try {
    await client.connect(transport, { timeout: TIMEOUT_MS });
  } catch (e) {
    emit({ step: 'connect', outcome: 'error', error: errorInfo(e) });
    await transport.close().catch(() => {});
    return;
  }
  emit({
    step: 'connect',
    outcome: 'success',
    result: {
      protocol_version: transport.protocolVersion ?? null,
      server: client.getServerVersion()?.name ?? null,
    },
  });
  for (const s of PLAN.steps ?? []) {
    await runStep(client, s);
  }
  try {
    // What a well-behaved client does when it is done: end the session (DELETE), then close.
    await transport.terminateSession();
    await client.close();
  } catch (e) {
    emit({ step: 'close', outcome: 'error', error: errorInfo(e) });
  }
}

let ok = true;
try {
  await run();
} catch (e) {
  ok = false;
  emit({ step: 'driver', outcome: 'error', error: errorInfo(e), stack: String(e?.stack).slice(-2000) });
}
emit({ summary: true, ok, sdk: 'mcp (typescript)' });
process.exit(ok ? 0 : 1);
