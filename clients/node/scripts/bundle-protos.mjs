// npm pack's prepack/postpack: copy the contract (protos/imagegen, and the vendored
// protos/google/api it imports) from the repository into proto/ so that the tarball
// works outside the repository; `--clean` removes the copies again. In the repository
// the client reads ../../protos directly; proto/ holds only the copies and health.proto.
import { cpSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REPO_PROTOS = fileURLToPath(new URL('../../../protos/', import.meta.url));
const BUNDLED = fileURLToPath(new URL('../proto/', import.meta.url));
const CONTRACT = ['imagegen', 'google'];

for (const dir of CONTRACT) rmSync(BUNDLED + dir, { recursive: true, force: true });
if (!process.argv.includes('--clean')) {
  for (const dir of CONTRACT) cpSync(REPO_PROTOS + dir, BUNDLED + dir, { recursive: true, filter: (path) => !path.endsWith('.json') });
}
