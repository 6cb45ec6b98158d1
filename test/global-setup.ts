// Before any test: compile src/ to dist/, which the tests that start the
// `postern` command as a child process run (bin/postern.js).
import { buildDist } from '../scripts/build.ts';

export default function setup(): void {
  buildDist();
}
