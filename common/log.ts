/** Fields every agent log line carries once a job is known. */
export interface LogContext {
  agentId: string;
  runName?: string;
  jobId?: string;
  attempt?: string;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** A scoped JSON-lines logger: each line has the time, level, message and the scope's fields. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
  child(fields: Partial<LogContext>): Logger;
}

export function jsonLogger(write: (line: string) => void, context: LogContext): Logger {
  return {
    log(level, msg, fields = {}) {
      write(`${JSON.stringify({ t: new Date().toISOString(), level, msg, ...context, ...fields })}\n`);
    },
    child(fields) {
      return jsonLogger(write, { ...context, ...fields });
    },
  };
}
