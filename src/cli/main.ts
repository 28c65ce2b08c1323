#!/usr/bin/env node
/**
 * The `rebasin` command line. Each command declares its options (cli/args.ts) and returns an exit
 * code; errors map to documented exit codes: 2 usage, 3 bad input, 4 a failed check, 1 otherwise.
 */
import { CheckFailedError, EXIT, InputError } from '../errors.js';
import { removeTempFiles } from '../io/atomic.js';
import { formatHelp, parseArgs, UsageError, type CommandSpec, type Parsed } from './args.js';
import { align, alignSpec, interpolate, interpolateSpec, merge, mergeSpec } from './align.js';
import { doctor, doctorSpec } from './doctor.js';
import { evalModels, evalSpec } from './eval.js';
import { continualSpec, experimentContinual } from './experiment-continual.js';
import { experimentRecovery, recoverySpec } from './experiment-recovery.js';
import { demo, demoSpec, experimentLmc, lmcSpec } from './experiment-lmc.js';
import { experimentMerge, mergeExperimentSpec } from './experiment-merge.js';
import { serve, serveSpec } from './serve.js';
import { train, trainSpec } from './train.js';
import { specCheck, specCheckSpec, specInfer, specInferSpec } from './spec.js';
import { apply, applySpec } from './apply.js';

interface Command {
  spec: CommandSpec;
  run: (args: Parsed) => Promise<number>;
}

/** Commands by name; sub-commands are "group name" (e.g. "experiment recovery"). */
const commands: Record<string, Command> = {
  align: { spec: alignSpec, run: align },
  demo: { spec: demoSpec, run: demo },
  eval: { spec: evalSpec, run: evalModels },
  interpolate: { spec: interpolateSpec, run: interpolate },
  merge: { spec: mergeSpec, run: merge },
  doctor: { spec: doctorSpec, run: doctor },
  serve: { spec: serveSpec, run: serve },
  'experiment lmc': { spec: lmcSpec, run: experimentLmc },
  train: { spec: trainSpec, run: train },
  'spec infer': { spec: specInferSpec, run: specInfer },
  'spec check': { spec: specCheckSpec, run: specCheck },
  'experiment recovery': { spec: recoverySpec, run: experimentRecovery },
  'experiment continual': { spec: continualSpec, run: experimentContinual },
  'experiment merge': { spec: mergeExperimentSpec, run: experimentMerge },
  apply: { spec: applySpec, run: apply },
};

function topHelp(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(24)} ${c.spec.summary}`);
  return ['rebasin: align neural networks by permutation (re-basin), analyse and merge them.', '', 'commands:', ...rows, '', 'Run `rebasin <command> --help` for its options.'].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(topHelp() + '\n');
    return argv.length === 0 ? EXIT.usage : EXIT.ok;
  }
  let name = argv[0];
  let rest = argv.slice(1);
  if (!commands[name] && argv.length > 1 && commands[`${argv[0]} ${argv[1]}`]) {
    name = `${argv[0]} ${argv[1]}`;
    rest = argv.slice(2);
  }
  const cmd = commands[name];
  if (!cmd) {
    const group = Object.keys(commands).filter((k) => k.startsWith(argv[0] + ' '));
    process.stderr.write(group.length
      ? `rebasin ${argv[0]}: expected one of: ${group.map((g) => g.split(' ')[1]).join(', ')}\n`
      : `rebasin: unknown command "${argv[0]}"\n\n${topHelp()}\n`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(formatHelp(cmd.spec) + '\n');
    return EXIT.ok;
  }
  try {
    return await cmd.run(parseArgs(cmd.spec, rest));
  } catch (e) {
    const err = e as Error;
    if (err instanceof UsageError) {
      process.stderr.write(`rebasin ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof CheckFailedError) {
      process.stderr.write(`rebasin ${name}: check failed: ${err.message}\n`);
      return EXIT.checkFailed;
    }
    if (err instanceof InputError) { // FormatError (a malformed file) is one
      process.stderr.write(`rebasin ${name}: ${err.message}\n`);
      return EXIT.badInput;
    }
    process.stderr.write(`rebasin ${name}: ${err.stack ?? err.message}\n`);
    return EXIT.internal;
  }
}

// `rebasin … --json | head`: the reader went away; the outputs are already written, so end quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  removeTempFiles();
  process.exit(process.exitCode ?? EXIT.ok);
});
// Progress and messages on a closed stderr (`2>&1 | head`) are dropped; the command carries on.
process.stderr.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
});

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => { process.stderr.write(String(e) + '\n'); process.exitCode = EXIT.internal; },
);
