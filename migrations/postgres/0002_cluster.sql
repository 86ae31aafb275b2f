-- Cluster mode (see the design in the README, "Running several machines").

-- Every node that ever started: its API address, capacity and heartbeat
-- (server time). A node is live while its heartbeat is younger than the
-- lease TTL.
CREATE TABLE nodes (
    name         text        PRIMARY KEY,
    advertise    text        NOT NULL,
    max_sessions integer     NOT NULL,
    draining     boolean     NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One row per session that has ever run: the node that may drive it while
-- expires_at (server time) is in the future. generation grows by one at
-- every acquisition; a write that belongs to the session carries the
-- (node, generation) it holds and succeeds only while that lease is live.
CREATE TABLE leases (
    session    text        PRIMARY KEY,
    node       text        NOT NULL,
    generation bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX leases_node ON leases (node);
