-- Users: fixture users and everyone who logs in by SMS or QR.
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    mobile       TEXT UNIQUE,
    display_name TEXT NOT NULL,
    portrait     TEXT,
    created_at   INTEGER NOT NULL
);

-- Login sessions behind the `authToken` header. Only a SHA-256 of the token is
-- stored, so a copy of the database does not log anybody in.
CREATE TABLE auth_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    client_id  TEXT NOT NULL,
    platform   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX auth_sessions_user ON auth_sessions(user_id);

-- Server-wide settings such as the IM token signing secret.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
