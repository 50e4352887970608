-- Passwords: an argon2id PHC string per user (salt and parameters inside),
-- never the password. (Wrong tries and locks are counted in memory, per
-- mobile, whether or not it has an account.)
CREATE TABLE passwords (
    user_id    TEXT PRIMARY KEY REFERENCES users(id),
    hash       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Favorites: messages (or links) a user kept, as the Wildfire clients send them.
CREATE TABLE favorites (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    message_uid INTEGER NOT NULL DEFAULT 0,
    type        INTEGER NOT NULL DEFAULT 0,
    conv_type   INTEGER NOT NULL DEFAULT 0,
    conv_target TEXT NOT NULL DEFAULT '',
    conv_line   INTEGER NOT NULL DEFAULT 0,
    origin      TEXT NOT NULL DEFAULT '',
    sender      TEXT NOT NULL DEFAULT '',
    title       TEXT NOT NULL DEFAULT '',
    url         TEXT NOT NULL DEFAULT '',
    thumb_url   TEXT NOT NULL DEFAULT '',
    data        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX favorites_user ON favorites(user_id, id);

-- The current announcement of each group (one per group; a new one replaces it).
CREATE TABLE group_announcements (
    group_id   TEXT PRIMARY KEY REFERENCES groups(id),
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
