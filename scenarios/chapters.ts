/**
 * Every tutorial chapter, by file name, in order. Notebooks, tests and the notebook builder use
 * this list.
 *
 * @module
 */

import type { Chapter, ChapterContext } from "./_chapter.ts";
import { chapter as ch1 } from "./01_leader_election.ts";
import { chapter as ch2 } from "./02_log_replication.ts";
import { chapter as ch3 } from "./03_crash_restart.ts";
import { chapter as ch4 } from "./04_leader_crash.ts";
import { chapter as ch5 } from "./05_partitions.ts";
import { chapter as ch6 } from "./06_metadata_store.ts";
import { chapter as ch7 } from "./07_election_timing.ts";
import { chapter as ch8 } from "./08_coordination.ts";
import { chapter as ch9 } from "./09_log_compaction.ts";
import { chapter as ch10 } from "./10_membership.ts";

/** The chapters by module file name (`01_leader_election.ts`, …). */
export const chapters: Readonly<Record<string, Chapter<ChapterContext>>> = {
  "01_leader_election.ts": ch1 as unknown as Chapter<ChapterContext>,
  "02_log_replication.ts": ch2 as unknown as Chapter<ChapterContext>,
  "03_crash_restart.ts": ch3 as unknown as Chapter<ChapterContext>,
  "04_leader_crash.ts": ch4 as unknown as Chapter<ChapterContext>,
  "05_partitions.ts": ch5 as unknown as Chapter<ChapterContext>,
  "06_metadata_store.ts": ch6 as unknown as Chapter<ChapterContext>,
  "07_election_timing.ts": ch7 as unknown as Chapter<ChapterContext>,
  "08_coordination.ts": ch8 as unknown as Chapter<ChapterContext>,
  "09_log_compaction.ts": ch9 as unknown as Chapter<ChapterContext>,
  "10_membership.ts": ch10 as unknown as Chapter<ChapterContext>,
};
