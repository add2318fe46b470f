/**
 * One user's way to a hold, with the generated TypeScript client over real gRPC (HTTP/2,
 * connect-node's gRPC transport), through the load balancer.
 *
 * Joins the event's queue, waits for the pass (WatchQueue, or GetQueueStatus polls when the
 * replica has too many watchers), holds the best available seats of a seated zone with it, then
 * reads the seat map until the decoded map shows every held seat as held, prints a summary per
 * zone and releases the hold (unless --keep). Exits 0 when all of that worked, 1 on any failure
 * (the gRPC status is printed), 2 on bad arguments.
 *
 *     npm ci && npx tsc -p . && \
 *       TICKETING_TOKEN=$(cargo run -q --bin stack -- token --user alice) \
 *       node dist/example.js --event EVENT_ID
 *
 * Settings come from flags or the environment: --target (TICKETING_TARGET, default
 * 127.0.0.1:8080), --token (TICKETING_TOKEN), --event (TICKETING_EVENT_ID).
 */

import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { AdmissionService, QueueState, type QueueStatus } from "./gen/ticketing/v1/admission_pb.js";
import {
  InventoryService,
  SeatStatesEncoding,
  ZoneKind,
  type GetSeatMapResponse,
  type ZoneSeatMap,
} from "./gen/ticketing/v1/inventory_pb.js";
import { SeatLockService } from "./gen/ticketing/v1/seat_lock_pb.js";
import { HELD, STATE_NAMES, SeatStatesError, decodeZone, type ZoneStates } from "./seat_map.js";

/** Longest one unary call may take, in milliseconds. */
const CALL_TIMEOUT_MS = 10_000;

/** What went wrong, for the last line of output. */
class Failed extends Error {}

const USAGE = `usage: node dist/example.js [--target HOST:PORT] [--token TOKEN] [--event EVENT_ID]
                              [--zone ZONE] [--quantity N] [--wait SECONDS] [--keep]`;

interface Args {
  target: string;
  token: string;
  event: string;
  zone?: string;
  quantity: number;
  waitMs: number;
  keep: boolean;
}

/** The settings, or a message saying what is wrong with them. */
function parse(argv: string[]): Args | string {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        target: { type: "string", default: process.env.TICKETING_TARGET ?? "127.0.0.1:8080" },
        token: { type: "string", default: process.env.TICKETING_TOKEN },
        event: { type: "string", default: process.env.TICKETING_EVENT_ID },
        zone: { type: "string" },
        quantity: { type: "string", default: "2" },
        wait: { type: "string", default: "120" },
        keep: { type: "boolean", default: false },
      },
    }));
  } catch (error) {
    return String(error instanceof Error ? error.message : error);
  }
  if (!values.token) {
    return "no token: --token or TICKETING_TOKEN (`stack token --user NAME`)";
  }
  if (!values.event) {
    return "no event: --event or TICKETING_EVENT_ID";
  }
  const quantity = Number(values.quantity);
  const wait = Number(values.wait);
  if (!Number.isInteger(quantity) || quantity < 1) {
    return "--quantity must be a whole number of at least 1";
  }
  if (!(wait > 0)) {
    return "--wait must be a positive number of seconds";
  }
  return {
    target: values.target ?? "127.0.0.1:8080",
    token: values.token,
    event: values.event,
    zone: values.zone,
    quantity,
    waitMs: wait * 1000,
    keep: values.keep ?? false,
  };
}

/** Each zone decoded, its decoded counts checked against the server's counters. */
function checkedZones(response: GetSeatMapResponse): [ZoneSeatMap, ZoneStates][] {
  return response.zones.map((message) => {
    const zone = decodeZone(message);
    const counts = zone.counts();
    if (
      message.kind === ZoneKind.SEATED &&
      (counts.free !== message.free || counts.held !== message.held || counts.sold !== message.sold)
    ) {
      throw new Failed(
        `zone ${message.zoneId}: decoded ${JSON.stringify(counts)}, the server counts ` +
          `free ${message.free}, held ${message.held}, sold ${message.sold}`,
      );
    }
    return [message, zone];
  });
}

async function run(args: Args): Promise<void> {
  const bearer: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${args.token}`);
    return next(request);
  };
  const baseUrl = `http://${args.target}`;
  // One HTTP/2 connection for every call, closed at the end so the process can exit.
  const sessionManager = new Http2SessionManager(baseUrl);
  try {
    await calls(args, createGrpcTransport({ baseUrl, sessionManager, interceptors: [bearer] }));
  } finally {
    sessionManager.abort();
  }
}

async function calls(args: Args, transport: Transport): Promise<void> {
  const admission = createClient(AdmissionService, transport);
  const inventory = createClient(InventoryService, transport);
  const seatLock = createClient(SeatLockService, transport);
  const started = Date.now();
  const deadline = started + args.waitMs;
  const call = { timeoutMs: CALL_TIMEOUT_MS };

  // Join, then wait for the pass.
  const joined = await admission.join({ eventId: args.event }, call);
  console.log(`joined: ticket ${joined.ticket}, ${QueueState[joined.state]}, position ${joined.position}`);
  let passToken = joined.pass?.token ?? "";
  if (!passToken) {
    // The stream is ended by this signal when the wait is over or a pass came (a call's own
    // timeoutMs would keep its timer, and the process, alive after an early break).
    const watch = new AbortController();
    const timer = setTimeout(() => watch.abort(), Math.max(deadline - Date.now(), 1000));
    try {
      const stream = admission.watchQueue({ eventId: args.event }, { signal: watch.signal });
      let position: bigint | undefined;
      for await (const status of stream) {
        passToken = status.pass?.token ?? "";
        if (passToken) {
          break;
        }
        if (status.position === position) {
          continue;
        }
        position = status.position;
        console.log(
          `waiting: position ${status.position} of ${status.queueLength}, about ${status.estimatedWaitSeconds} s`,
        );
      }
    } catch (error) {
      if (watch.signal.aborted) {
        // The wait is over: the check below says so.
      } else if (error instanceof ConnectError && error.code === Code.ResourceExhausted) {
        console.log(`WatchQueue refused (${error.rawMessage}); polling GetQueueStatus`);
      } else {
        throw error;
      }
    } finally {
      clearTimeout(timer);
      watch.abort();
    }
  }
  // The stream ended without a pass, or was refused: ask once a second.
  while (!passToken) {
    if (Date.now() > deadline) {
      throw new Failed("no pass before the deadline");
    }
    const status: QueueStatus = await admission.getQueueStatus({ eventId: args.event }, call);
    passToken = status.pass?.token ?? "";
    if (!passToken) {
      await sleep(1000);
    }
  }
  console.log(`admitted: got a pass after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // Hold the best seats of the first seated zone with enough free seats.
  const before = await inventory.getSeatMap({ eventId: args.event }, call);
  const zoneId = before.zones.find(
    (z) =>
      z.kind === ZoneKind.SEATED &&
      z.free >= args.quantity &&
      (args.zone === undefined || z.zoneId === args.zone),
  )?.zoneId;
  if (zoneId === undefined) {
    throw new Failed(`no seated zone${args.zone ? " " + args.zone : ""} has ${args.quantity} free seats`);
  }
  const hold = await seatLock.holdBestAvailable(
    { passToken, eventId: args.event, zoneId, quantity: args.quantity, allowSplit: true },
    call,
  );
  console.log(
    `held: hold ${hold.holdId}, seats ${hold.seatIds.join(", ")}, ` +
      `${(Number(hold.totalPriceCents) / 100).toFixed(2)} ${hold.currency}`,
  );

  // The seat map follows the holds through the event stream: wait until it shows them.
  let response: GetSeatMapResponse;
  let zones: [ZoneSeatMap, ZoneStates][];
  for (;;) {
    response = await inventory.getSeatMap({ eventId: args.event }, call);
    zones = checkedZones(response);
    const zone = zones.find(([message]) => message.zoneId === zoneId)?.[1];
    const states = hold.seatIds.map((seat) => zone?.state(seat));
    if (states.every((state) => state === HELD)) {
      break;
    }
    if (Date.now() > deadline) {
      const shown = hold.seatIds.map((seat, i) => `${seat} ${STATE_NAMES[states[i] ?? 0] ?? "unknown"}`);
      throw new Failed(`the seat map still shows ${shown.join(", ")}`);
    }
    await sleep(200);
  }

  console.log(`seat map version ${response.version}:`);
  for (const [message, decoded] of zones) {
    if (message.kind === ZoneKind.SEATED) {
      const counts = decoded.counts();
      console.log(
        `  zone ${message.zoneId}: ${counts.free} free, ${counts.held} held, ${counts.sold} sold ` +
          `(${SeatStatesEncoding[message.seatStatesEncoding]}, ${message.seatStates.length} bytes)`,
      );
    } else {
      console.log(
        `  zone ${message.zoneId}: general admission, ${message.free} free, ${message.held} held, ${message.sold} sold`,
      );
    }
  }
  console.log(
    `OK: hold ${hold.holdId} of ${hold.seatIds.length} seats (${hold.seatIds.join(", ")}) ` +
      "is held in the decoded seat map",
  );

  if (!args.keep) {
    await seatLock.releaseHold({ eventId: args.event, holdId: hold.holdId }, call);
    console.log(`released hold ${hold.holdId}`);
  }
}

async function main(): Promise<number> {
  const args = parse(process.argv.slice(2));
  if (typeof args === "string") {
    console.error(`${args}\n${USAGE}`);
    return 2;
  }
  try {
    await run(args);
    return 0;
  } catch (error) {
    if (error instanceof ConnectError) {
      console.error(`FAILED: ${Code[error.code]}: ${error.rawMessage}`);
    } else if (error instanceof Failed || error instanceof SeatStatesError) {
      console.error(`FAILED: ${error.message}`);
    } else {
      console.error("FAILED:", error);
    }
    return 1;
  }
}

process.exitCode = await main();
