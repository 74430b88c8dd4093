import { TYPING_DELAY_MS } from "./ui.js";

// One mechanism for every request that follows the user's typing (the chart, the line counts) and for
// the next-line search: `schedule()` waits until typing pauses; `run()` starts at once. Starting a
// request aborts the one before it (its answer could only be stale, and the server stops working on
// it), and each request takes the next number of a counter: an answer is used only while its number
// is still the newest, so a late answer never overwrites a newer one.
export class Latest {
  constructor(work, delayMs = TYPING_DELAY_MS) {
    this.work = work; // async (signal, isCurrent) => ...
    this.delayMs = delayMs;
    this.timer = 0;
    this.sequence = 0;
    this.controller = null;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), this.delayMs);
  }

  get running() { return this.controller !== null; }

  cancel() {
    clearTimeout(this.timer);
    this.sequence += 1;
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run() {
    clearTimeout(this.timer);
    const sequence = ++this.sequence;
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    const isCurrent = () => sequence === this.sequence;
    try {
      await this.work(controller.signal, isCurrent);
    } catch (error) {
      if (error.name !== "AbortError") throw error;
    } finally {
      if (isCurrent()) this.controller = null;
    }
  }
}

