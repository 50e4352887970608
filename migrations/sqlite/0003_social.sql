-- Friend requests: one row per direction; a rejected request can be made again.
CREATE TABLE friend_requests (
    from_user  TEXT NOT NULL,
    to_user    TEXT NOT NULL,
    remark     TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL,              -- 'pending', 'accepted' or 'rejected'
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (from_user, to_user)
) WITHOUT ROWID;
CREATE INDEX friend_requests_to ON friend_requests(to_user, status);

-- Friendships, stored in both directions.
CREATE TABLE friends (
    user_id    TEXT NOT NULL,
    friend_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

-- Per user and conversation: how far the user has read, and whether it is muted.
CREATE TABLE conv_state (
    user_id    TEXT NOT NULL,
    conv_type  TEXT NOT NULL,
    conv_key   TEXT NOT NULL,
    read_up_to INTEGER NOT NULL DEFAULT 0,   -- a messages.id
    muted      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_type, conv_key)
) WITHOUT ROWID;

-- Uploaded media: metadata here; the bytes in <data dir>/media/<id>, or in memory when ephemeral.
CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

-- Set while an administrator has banned the user.
ALTER TABLE users ADD COLUMN banned_at INTEGER;

-- Administrator mutes: one user in a group, or the whole group (user_id '').
CREATE TABLE group_mutes (
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
