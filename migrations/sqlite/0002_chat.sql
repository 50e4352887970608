-- Chat messages: stored once, whatever the number of recipients.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sender        TEXT NOT NULL,
    client_msg_id TEXT,
    conv_type     TEXT NOT NULL,      -- 'single' or 'group'
    conv_key      TEXT NOT NULL,      -- single: the two user ids sorted, joined by '|'; group: the group id
    target        TEXT NOT NULL,      -- the conversation target as the sender addressed it
    content       TEXT NOT NULL,      -- JSON
    server_time   INTEGER NOT NULL
);
-- Idempotent retries: one message per (sender, clientMsgId).
CREATE UNIQUE INDEX messages_dedupe ON messages(sender, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_conv ON messages(conv_type, conv_key, id);

-- Per-user inbox: seq is contiguous from 1 for each user.
CREATE TABLE inbox (
    user_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;

-- What each device (user, clientId) has acknowledged with `recv`.
CREATE TABLE devices (
    user_id   TEXT NOT NULL,
    client_id TEXT NOT NULL,
    platform  INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) WITHOUT ROWID;

-- Groups: created by the social layer; the broker fans group messages out to members.
CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    dissolved_at INTEGER             -- set when dissolved; members are then removed
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL DEFAULT 'member',  -- 'owner', 'admin' or 'member'
    joined_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_user ON group_members(user_id);
