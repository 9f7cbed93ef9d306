// The OPC UA server the fieldgate tests and cmd/opcuabench drive as their
// real, independent peer (node-opcua). internal/opcuatest writes a JSON
// config, starts `node server.mjs --config <file>` and reads the endpoint
// URL this process prints on stdout (one line, "opc.tcp://…") once it listens.
// Logs go to stderr. SIGTERM/SIGINT or closing stdin shut it down cleanly;
// the tests also SIGKILL it and start it again on the same port to test
// recovery. Commands on stdin: see the end of main().
//
// Config (every field optional):
//   port            TCP port; 0 (default) lets the OS choose one.
//   host            address to bind; default 127.0.0.1.
//   security        list of "None" or "<policy>:<mode>", policy one of
//                   Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss,
//                   mode Sign or SignAndEncrypt. Default ["None"].
//   allowAnonymous  default true.
//   users           [{username, password}] accepted username tokens.
//   certificateFile, privateKeyFile  the server's RSA application
//                   certificate (PEM or DER) and key (PEM); its URI SAN must
//                   equal applicationUri.
//   applicationUri  default "urn:fieldgate:opcuatest:server".
//   pkiDir          certificate store folder (trusted/rejected client certs).
//   trustedClientCertificates  client certificate files trusted at start.
//   trustedUserCertificates    X509 user token certificates accepted (kept in
//                   pkiDir/user, not node-opcua's default ~/.config store).
//   autoAcceptClientCertificates  accept every client certificate (explicit
//                   opt-in; default false).
//   benchVariables  number of Test.Bench.<i> Double variables, each changed
//                   once a second. Default 0.
//   benchIntervalMs update period of the bench variables; default 1000.
//   flakyPeriodMs   period of Test.Flaky's Good/Bad toggle; default 500.
//   maxNotificationsPerPublish  the most notifications the server puts in
//                   one PublishResponse; default node-opcua's 1000.
//
// Address space (namespace index 1, string NodeIds, all under
// Objects/Test = ns=1;s=Test):
//   Test.Scalars folder: Test.Boolean, Test.SByte, Test.Byte, Test.Int16,
//     Test.UInt16, Test.Int32, Test.UInt32, Test.Int64, Test.UInt64,
//     Test.Float, Test.Double, Test.String, Test.DateTime, Test.Guid,
//     Test.ByteString, Test.LocalizedText, Test.QualifiedName, Test.NodeId,
//     Test.StatusCode (fixed values, read/write).
//   Test.Arrays folder: Test.DoubleArray, Test.Int32Array, Test.StringArray.
//   Test.Dynamic folder: Test.Counter (UInt32, +1 every 100 ms),
//     Test.Sine (Double, sin(2πt/10s), every 100 ms).
//   Test.Writable folder: Test.Setpoint (AnalogItem Double, EURange and
//     InstrumentRange 0..100, writes outside refused with BadOutOfRange),
//     Test.WritableInt16 (Int16, read/write).
//   Test.ReadOnly (Double 42.5, read only: writes get BadNotWritable).
//   Test.Flaky (Double, status toggles Good/Bad every flakyPeriodMs).
//   Test.Faulty (Double, status Bad while Test.FaultyBad is true).
//   Test.FaultyBad (Boolean, writable: the command that drives Test.Faulty).
//   Test.Tree: Test.Tree.Plant / Test.Tree.Plant.Line1 /
//     Test.Tree.Plant.Line1.Press4 with variables
//     Test.Tree.Plant.Line1.Press4.Temp (Double) and
//     Test.Tree.Plant.Line1.Press4.Running (Boolean).
//   Test.Bench folder: Test.Bench.0 … Test.Bench.<N-1> (Double).

import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createInterface } from "node:readline";
import { join } from "node:path";
import {
  OPCUAServer,
  OPCUACertificateManager,
  MessageSecurityMode,
  SecurityPolicy,
  DataType,
  Variant,
  VariantArrayType,
  StatusCodes,
  LocalizedText,
  QualifiedName,
  coerceNodeId,
  Subscription,
} from "node-opcua";

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--config") out.config = argv[++i];
    else if (argv[i] === "--port") out.port = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const cfg = args.config ? JSON.parse(readFileSync(args.config, "utf8")) : {};
if (args.port !== undefined) cfg.port = args.port;

const log = (...a) => process.stderr.write(`opcua-peer: ${a.join(" ")}\n`);

const policies = {
  Basic256Sha256: SecurityPolicy.Basic256Sha256,
  Aes128_Sha256_RsaOaep: SecurityPolicy.Aes128_Sha256_RsaOaep,
  Aes128Sha256RsaOaep: SecurityPolicy.Aes128_Sha256_RsaOaep,
  Aes256_Sha256_RsaPss: SecurityPolicy.Aes256_Sha256_RsaPss,
  Aes256Sha256RsaPss: SecurityPolicy.Aes256_Sha256_RsaPss,
};
const modes = {
  Sign: MessageSecurityMode.Sign,
  SignAndEncrypt: MessageSecurityMode.SignAndEncrypt,
};

// The security pairs to offer. node-opcua offers the cross product of its
// policies and modes on one endpoint; wanted() prunes the pairs not asked.
function parseSecurity(list) {
  const pairs = [];
  for (const item of list || ["None"]) {
    if (item === "None") {
      pairs.push([SecurityPolicy.None, MessageSecurityMode.None]);
      continue;
    }
    const [p, m] = item.split(":");
    if (!policies[p] || !modes[m]) throw new Error(`unknown security ${item}`);
    pairs.push([policies[p], modes[m]]);
  }
  return {
    securityPolicies: [...new Set(pairs.map((x) => x[0]))],
    securityModes: [...new Set(pairs.map((x) => x[1]))],
    wanted: (policy, mode) => pairs.some((x) => x[0] === policy && x[1] === mode),
  };
}

async function main() {
  if (cfg.maxNotificationsPerPublish > 0) {
    Subscription.maxNotificationPerPublishHighLimit = cfg.maxNotificationsPerPublish;
  }
  const applicationUri = cfg.applicationUri || "urn:fieldgate:opcuatest:server";
  const host = cfg.host || "127.0.0.1";
  const pkiDir = cfg.pkiDir;
  let serverCertificateManager;
  let userCertificateManager;
  if (pkiDir) {
    await mkdir(pkiDir, { recursive: true });
    serverCertificateManager = new OPCUACertificateManager({
      rootFolder: pkiDir,
      automaticallyAcceptUnknownCertificate: !!cfg.autoAcceptClientCertificates,
    });
    await serverCertificateManager.initialize();
    for (const file of cfg.trustedClientCertificates || []) {
      await serverCertificateManager.trustCertificate(readDER(file));
    }
    userCertificateManager = new OPCUACertificateManager({
      rootFolder: join(pkiDir, "user"),
      automaticallyAcceptUnknownCertificate: false,
    });
    await userCertificateManager.initialize();
    for (const file of cfg.trustedUserCertificates || []) {
      await userCertificateManager.trustCertificate(readDER(file));
    }
  }
  const users = new Map((cfg.users || []).map((u) => [u.username, u.password]));
  const sec = parseSecurity(cfg.security);

  const server = new OPCUAServer({
    port: cfg.port || 0,
    host,
    hostname: host,
    securityPolicies: sec.securityPolicies,
    securityModes: sec.securityModes,
    allowAnonymous: cfg.allowAnonymous !== false,
    certificateFile: cfg.certificateFile,
    privateKeyFile: cfg.privateKeyFile,
    serverCertificateManager,
    userCertificateManager,
    serverInfo: {
      applicationUri,
      productUri: "urn:fieldgate:opcuatest",
      applicationName: { text: "fieldgate test peer" },
    },
    buildInfo: { productName: "fieldgate-opcua-peer" },
    userManager: {
      isValidUser: (username, password) => users.has(username) && users.get(username) === password,
    },
    serverCapabilities: {
      maxSessions: 100,
      operationLimits: {
        maxMonitoredItemsPerCall: 100000,
        maxNodesPerRead: 100000,
        maxNodesPerWrite: 100000,
        maxNodesPerBrowse: 100000,
      },
    },
  });
  await server.initialize();
  build(server.engine.addressSpace);
  await server.start();
  const port = server.endpoints[0].port;
  // Port 0 works: node-opcua builds its endpoint URLs from the port the
  // socket got. Drop the pairs of the policy × mode cross product that were
  // not asked for; keep the restricted None endpoint node-opcua adds so that
  // GetEndpoints works when None is not offered.
  for (const ep of server.endpoints) {
    if (Array.isArray(ep._endpoints)) {
      ep._endpoints = ep._endpoints.filter(
        (d) => d.restricted || sec.wanted(d.securityPolicyUri, d.securityMode),
      );
    }
  }
  process.stdout.write(`opc.tcp://${host}:${port}\n`);
  log(`listening on ${host}:${port}`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearTimers();
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  // Commands, one a line on stdin, each answered by one line on stdout
  // ("ok <command>" or "error <command>: <reason>"):
  //   trust <file>   trust the client certificate in file (PEM or DER),
  //                  moving it out of rejected/ if it was refused before.
  // stdin closing (the test process died) stops the server.
  const rl = createInterface({ input: process.stdin });
  rl.on("line", async (line) => {
    const [cmd, ...rest] = line.trim().split(" ");
    const arg = rest.join(" ");
    try {
      if (cmd === "trust") {
        if (!serverCertificateManager) throw new Error("no pkiDir");
        await serverCertificateManager.trustCertificate(readDER(arg));
      } else {
        throw new Error("unknown command");
      }
      process.stdout.write(`ok ${cmd}\n`);
    } catch (err) {
      process.stdout.write(`error ${cmd}: ${err && err.message ? err.message : err}\n`);
    }
  });
  rl.on("close", stop);
}

function readDER(file) {
  const data = readFileSync(file);
  const text = data.toString("latin1");
  const m = text.match(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/);
  if (!m) return data;
  return Buffer.from(m[1].replace(/\s+/g, ""), "base64");
}

const timers = [];
function every(ms, fn) {
  timers.push(setInterval(fn, ms));
}
function clearTimers() {
  for (const t of timers) clearInterval(t);
}

function build(addressSpace) {
  const ns = addressSpace.getOwnNamespace();
  const objects = addressSpace.rootFolder.objects;
  const folder = (id, name, parent) =>
    ns.addFolder(parent, { nodeId: `s=${id}`, browseName: name });
  const test = folder("Test", "Test", objects);

  const rw = { accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite" };
  const variable = (parent, id, name, dataType, value, extra = {}) =>
    ns.addVariable({
      componentOf: parent,
      nodeId: `s=${id}`,
      browseName: name,
      dataType,
      ...rw,
      value: new Variant({ dataType: DataType[dataType], arrayType: VariantArrayType.Scalar, value }),
      ...extra,
    });

  const scalars = folder("Test.Scalars", "Scalars", test);
  const scalarValues = [
    ["Boolean", true],
    ["SByte", -100],
    ["Byte", 200],
    ["Int16", -30000],
    ["UInt16", 60000],
    ["Int32", -2000000000],
    ["UInt32", 4000000000],
    ["Int64", [0xfffffffe, 0xfffffffe]], // -4294967298 as [high, low]
    ["UInt64", [0x00000001, 0x00000002]], // 4294967298
    ["Float", 3.5],
    ["Double", 2.718281828459045],
    ["String", "héllo OPC UA"],
    ["DateTime", new Date("2024-05-06T07:08:09.123Z")],
    ["Guid", "72962B91-FA75-4AE6-8D28-B404DC7DAF63"],
    ["ByteString", Buffer.from([0x00, 0x01, 0xfe, 0xff])],
    ["LocalizedText", new LocalizedText({ locale: "en", text: "Hello" })],
    ["QualifiedName", new QualifiedName({ namespaceIndex: 1, name: "Quality" })],
    ["NodeId", coerceNodeId("ns=1;s=Test.Double")],
    ["StatusCode", StatusCodes.BadOutOfRange],
  ];
  for (const [type, value] of scalarValues) {
    variable(scalars, `Test.${type}`, type, type, value);
  }

  const arrays = folder("Test.Arrays", "Arrays", test);
  const arr = (id, name, dataType, value) =>
    ns.addVariable({
      componentOf: arrays,
      nodeId: `s=${id}`,
      browseName: name,
      dataType,
      valueRank: 1,
      arrayDimensions: [0],
      ...rw,
      value: new Variant({ dataType: DataType[dataType], arrayType: VariantArrayType.Array, value }),
    });
  arr("Test.DoubleArray", "DoubleArray", "Double", new Float64Array([1.5, -2.25, 3]));
  arr("Test.Int32Array", "Int32Array", "Int32", new Int32Array([1, -2, 3, 2147483647]));
  arr("Test.StringArray", "StringArray", "String", ["a", "b", "ç"]);

  const dynamic = folder("Test.Dynamic", "Dynamic", test);
  const counter = variable(dynamic, "Test.Counter", "Counter", "UInt32", 0, {
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
  });
  const sine = variable(dynamic, "Test.Sine", "Sine", "Double", 0, {
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
  });
  let n = 0;
  const t0 = Date.now();
  every(100, () => {
    n = (n + 1) >>> 0;
    counter.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: n }));
    const t = (Date.now() - t0) / 1000;
    sine.setValueFromSource(new Variant({ dataType: DataType.Double, value: Math.sin((2 * Math.PI * t) / 10) }));
  });

  const writable = folder("Test.Writable", "Writable", test);
  ns.addAnalogDataItem({
    componentOf: writable,
    nodeId: "s=Test.Setpoint",
    browseName: "Setpoint",
    dataType: "Double",
    ...rw,
    engineeringUnitsRange: { low: 0, high: 100 },
    instrumentRange: { low: 0, high: 100 },
    acceptValueOutOfRange: false,
    value: new Variant({ dataType: DataType.Double, value: 20 }),
  });
  variable(writable, "Test.WritableInt16", "WritableInt16", "Int16", 7);

  variable(test, "Test.ReadOnly", "ReadOnly", "Double", 42.5, {
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
  });

  const flaky = variable(test, "Test.Flaky", "Flaky", "Double", 1, {
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
  });
  let flakyBad = false;
  every(cfg.flakyPeriodMs || 500, () => {
    flakyBad = !flakyBad;
    flaky.setValueFromSource(
      new Variant({ dataType: DataType.Double, value: flakyBad ? 0 : 1 }),
      flakyBad ? StatusCodes.BadSensorFailure : StatusCodes.Good,
    );
  });

  const faulty = variable(test, "Test.Faulty", "Faulty", "Double", 5, {
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
  });
  const faultyBad = variable(test, "Test.FaultyBad", "FaultyBad", "Boolean", false);
  faultyBad.on("value_changed", (dv) => {
    const bad = !!dv.value.value;
    faulty.setValueFromSource(
      new Variant({ dataType: DataType.Double, value: 5 }),
      bad ? StatusCodes.BadSensorFailure : StatusCodes.Good,
    );
  });

  const tree = folder("Test.Tree", "Tree", test);
  const plant = folder("Test.Tree.Plant", "Plant", tree);
  const line = folder("Test.Tree.Plant.Line1", "Line1", plant);
  const press = ns.addObject({ organizedBy: line, nodeId: "s=Test.Tree.Plant.Line1.Press4", browseName: "Press4" });
  variable(press, "Test.Tree.Plant.Line1.Press4.Temp", "Temp", "Double", 81.25);
  variable(press, "Test.Tree.Plant.Line1.Press4.Running", "Running", "Boolean", true);

  const nBench = cfg.benchVariables || 0;
  if (nBench > 0) {
    const bench = folder("Test.Bench", "Bench", test);
    const vars = [];
    for (let i = 0; i < nBench; i++) {
      vars.push(
        ns.addVariable({
          componentOf: bench,
          nodeId: `s=Test.Bench.${i}`,
          browseName: `B${i}`,
          dataType: "Double",
          accessLevel: "CurrentRead",
          userAccessLevel: "CurrentRead",
          value: new Variant({ dataType: DataType.Double, value: 0 }),
        }),
      );
    }
    let tick = 0;
    every(cfg.benchIntervalMs || 1000, () => {
      tick++;
      for (const v of vars) {
        v.setValueFromSource(new Variant({ dataType: DataType.Double, value: tick }));
      }
    });
  }
}

main().catch((err) => {
  log(`fatal: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
