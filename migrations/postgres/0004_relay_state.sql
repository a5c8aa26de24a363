-- The relay's last known state (one row, id = 1), written by the delivery
-- worker when its circuit breaker pauses or resumes delivery, read by
-- `casewire status`. Times are milliseconds since the Unix epoch, UTC.
CREATE TABLE relay_state (
    id          BIGINT PRIMARY KEY,
    target      TEXT NOT NULL,             -- host:port of the relay
    paused      BIGINT NOT NULL,           -- 1 while delivery is paused
    message     TEXT,                      -- the last fault, in words an operator can act on
    since       BIGINT,                    -- when the last fault started
    resumed_at  BIGINT,
    pauses      BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);
