-- The PostgreSQL schema: the same tables and columns as the SQLite one
-- (migrations/sqlite, 0001-0006), in PostgreSQL's types. Text compares
-- byte-wise (COLLATE "C") as in SQLite, so lists sort the same on both.
-- Integers are BIGINT except platforms, which imctl reads as 32-bit.

CREATE TABLE users (
    id           TEXT COLLATE "C" PRIMARY KEY,
    mobile       TEXT COLLATE "C" UNIQUE,
    display_name TEXT COLLATE "C" NOT NULL,
    portrait     TEXT,
    created_at   BIGINT NOT NULL,
    banned_at    BIGINT
);

CREATE TABLE auth_sessions (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    client_id  TEXT NOT NULL,
    platform   INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_sessions_user ON auth_sessions(user_id);

CREATE TABLE settings (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE messages (
    id            BIGINT PRIMARY KEY,
    sender        TEXT COLLATE "C" NOT NULL,
    client_msg_id TEXT COLLATE "C",
    conv_type     TEXT COLLATE "C" NOT NULL,
    conv_key      TEXT COLLATE "C" NOT NULL,
    target        TEXT COLLATE "C" NOT NULL,
    content       TEXT NOT NULL,
    server_time   BIGINT NOT NULL,
    sender_seq    BIGINT
);
-- Ids come from here, a batch at a time; several writers never share one.
CREATE SEQUENCE messages_id_seq AS BIGINT OWNED BY messages.id;
CREATE UNIQUE INDEX messages_dedupe ON messages(sender, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_conv ON messages(conv_type, conv_key, id);

-- No foreign key to messages: the writer inserts a batch's messages and
-- their inbox rows in one transaction, and a key check per row (a lookup
-- in messages for each of a big group's thousand rows) halved the writer.
CREATE TABLE inbox (
    user_id    TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX inbox_message ON inbox(user_id, message_id);

-- Each user's last inbox seq. A writer locks the rows of a batch's
-- recipients (in user order, so two writers never deadlock) before
-- numbering: seqs stay gapless and unique with several imctl processes.
CREATE TABLE inbox_heads (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    seq     BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id   TEXT COLLATE "C" NOT NULL,
    client_id TEXT COLLATE "C" NOT NULL,
    platform  INTEGER NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE groups (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL,
    owner        TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    dissolved_at BIGINT
);
CREATE TABLE group_members (
    group_id  TEXT COLLATE "C" NOT NULL REFERENCES groups(id),
    user_id   TEXT COLLATE "C" NOT NULL,
    role      TEXT COLLATE "C" NOT NULL DEFAULT 'member',
    joined_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

CREATE TABLE friend_requests (
    from_user  TEXT COLLATE "C" NOT NULL,
    to_user    TEXT COLLATE "C" NOT NULL,
    remark     TEXT NOT NULL DEFAULT '',
    status     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (from_user, to_user)
);
CREATE INDEX friend_requests_to ON friend_requests(to_user, status);

CREATE TABLE friends (
    user_id    TEXT COLLATE "C" NOT NULL,
    friend_id  TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE conv_state (
    user_id    TEXT COLLATE "C" NOT NULL,
    conv_type  TEXT COLLATE "C" NOT NULL,
    conv_key   TEXT COLLATE "C" NOT NULL,
    read_up_to BIGINT NOT NULL DEFAULT 0,
    muted      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_type, conv_key)
);

CREATE TABLE media (
    id           TEXT COLLATE "C" PRIMARY KEY,
    owner        TEXT COLLATE "C" NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE group_mutes (
    group_id TEXT COLLATE "C" NOT NULL,
    user_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE passwords (
    user_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    hash       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE favorites (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL,
    message_uid BIGINT NOT NULL DEFAULT 0,
    type        BIGINT NOT NULL DEFAULT 0,
    conv_type   BIGINT NOT NULL DEFAULT 0,
    conv_target TEXT NOT NULL DEFAULT '',
    conv_line   BIGINT NOT NULL DEFAULT 0,
    origin      TEXT NOT NULL DEFAULT '',
    sender      TEXT NOT NULL DEFAULT '',
    title       TEXT NOT NULL DEFAULT '',
    url         TEXT NOT NULL DEFAULT '',
    thumb_url   TEXT NOT NULL DEFAULT '',
    data        TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE INDEX favorites_user ON favorites(user_id, id);

CREATE TABLE group_announcements (
    group_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES groups(id),
    author     TEXT COLLATE "C" NOT NULL,
    text       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
