/**
 * Prints the Figure 2 rule map of docs/tutorial.md: every rule of the Raft paper's Figure 2, the
 * tutorial steps that show and assert it, and the test that runs them.
 *
 * ```sh
 * deno run -A scripts/figure2_table.ts
 * ```
 *
 * @module
 */

import { chapters } from "../scenarios/chapters.ts";
import { figure2Table, ruleSites } from "../scenarios/figure2.ts";

console.log(figure2Table(ruleSites(chapters)));
