import type {Migration} from '../store/sql.js'

/** Schema history of the records store. Append new migrations; never edit an applied one. */
export const RECORDS_MIGRATIONS_TABLE = 'records_migrations'

// Times are ISO-8601 UTC strings of fixed width (Date#toISOString), so they sort and compare as
// text identically in SQLite and MySQL.
export const RECORDS_MIGRATIONS: Migration[] = [
  {
    id: 1,
    name: 'messages, clients, users, audit_log',
    sqlite: [
      `CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id VARCHAR(64) NOT NULL UNIQUE,
        client_id VARCHAR(255) NOT NULL,
        sender_hash CHAR(64) NOT NULL,
        sender_masked VARCHAR(32) NOT NULL,
        body_enc BLOB NOT NULL,
        key_version INTEGER NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error VARCHAR(1000),
        queued_at CHAR(24) NOT NULL,
        delivered_at CHAR(24),
        last_attempt_at CHAR(24),
        updated_at CHAR(24) NOT NULL
      )`,
      'CREATE INDEX messages_status ON messages (status, queued_at)',
      'CREATE INDEX messages_client ON messages (client_id, queued_at)',
      'CREATE INDEX messages_queued ON messages (queued_at)',
      `CREATE TABLE clients (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        identity VARCHAR(255) NOT NULL,
        serial VARCHAR(64) NOT NULL UNIQUE,
        fingerprint CHAR(64),
        status VARCHAR(16) NOT NULL,
        issued_at CHAR(24),
        expires_at CHAR(24),
        revoked_at CHAR(24),
        reason VARCHAR(255),
        last_seen_at CHAR(24)
      )`,
      'CREATE INDEX clients_identity ON clients (identity)',
      `CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        email VARCHAR(255) NOT NULL UNIQUE,
        password_hash VARCHAR(255) NOT NULL,
        role VARCHAR(16) NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at CHAR(24) NOT NULL,
        last_login_at CHAR(24)
      )`,
      `CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_type VARCHAR(64) NOT NULL,
        actor VARCHAR(255),
        identity VARCHAR(255),
        ip VARCHAR(64),
        event_data TEXT,
        severity VARCHAR(16) NOT NULL,
        created_at CHAR(24) NOT NULL
      )`,
      'CREATE INDEX audit_created ON audit_log (created_at)',
    ],
    mysql: [
      `CREATE TABLE messages (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        message_id VARCHAR(64) NOT NULL,
        client_id VARCHAR(255) NOT NULL,
        sender_hash CHAR(64) NOT NULL,
        sender_masked VARCHAR(32) NOT NULL,
        body_enc MEDIUMBLOB NOT NULL,
        key_version INT NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        last_error VARCHAR(1000),
        queued_at CHAR(24) NOT NULL,
        delivered_at CHAR(24),
        last_attempt_at CHAR(24),
        updated_at CHAR(24) NOT NULL,
        UNIQUE KEY messages_message_id (message_id),
        KEY messages_status (status, queued_at),
        KEY messages_client (client_id, queued_at),
        KEY messages_queued (queued_at)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      `CREATE TABLE clients (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        identity VARCHAR(255) NOT NULL,
        serial VARCHAR(64) NOT NULL,
        fingerprint CHAR(64),
        status VARCHAR(16) NOT NULL,
        issued_at CHAR(24),
        expires_at CHAR(24),
        revoked_at CHAR(24),
        reason VARCHAR(255),
        last_seen_at CHAR(24),
        UNIQUE KEY clients_serial (serial),
        KEY clients_identity (identity)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      `CREATE TABLE users (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        email VARCHAR(255) NOT NULL,
        password_hash VARCHAR(255) NOT NULL,
        role VARCHAR(16) NOT NULL,
        active TINYINT NOT NULL DEFAULT 1,
        created_at CHAR(24) NOT NULL,
        last_login_at CHAR(24),
        UNIQUE KEY users_email (email)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      `CREATE TABLE audit_log (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        event_type VARCHAR(64) NOT NULL,
        actor VARCHAR(255),
        identity VARCHAR(255),
        ip VARCHAR(64),
        event_data TEXT,
        severity VARCHAR(16) NOT NULL,
        created_at CHAR(24) NOT NULL,
        KEY audit_created (created_at)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
    ],
  },
  {
    id: 2,
    name: 'portal: user client and roles, sessions and refresh tokens, keyset and audit indexes',
    sqlite: [
      'ALTER TABLE users ADD COLUMN client_id VARCHAR(255)',
      `CREATE TABLE portal_sessions (
        id CHAR(32) PRIMARY KEY,
        user_id INTEGER NOT NULL,
        ip VARCHAR(64),
        created_at CHAR(24) NOT NULL,
        revoked_at CHAR(24),
        revoked_reason VARCHAR(64)
      )`,
      'CREATE INDEX portal_sessions_user ON portal_sessions (user_id)',
      `CREATE TABLE portal_refresh_tokens (
        token_hash CHAR(64) PRIMARY KEY,
        session_id CHAR(32) NOT NULL,
        created_at CHAR(24) NOT NULL,
        expires_at CHAR(24) NOT NULL,
        used_at CHAR(24)
      )`,
      'CREATE INDEX portal_refresh_session ON portal_refresh_tokens (session_id)',
      'CREATE INDEX messages_client_status ON messages (client_id, status, queued_at)',
      'CREATE INDEX audit_type_actor ON audit_log (event_type, actor, created_at)',
      'CREATE INDEX audit_type_ip ON audit_log (event_type, ip, created_at)',
    ],
    mysql: [
      'ALTER TABLE users ADD COLUMN client_id VARCHAR(255) NULL',
      `CREATE TABLE portal_sessions (
        id CHAR(32) NOT NULL PRIMARY KEY,
        user_id BIGINT NOT NULL,
        ip VARCHAR(64),
        created_at CHAR(24) NOT NULL,
        revoked_at CHAR(24),
        revoked_reason VARCHAR(64),
        KEY portal_sessions_user (user_id)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      `CREATE TABLE portal_refresh_tokens (
        token_hash CHAR(64) NOT NULL PRIMARY KEY,
        session_id CHAR(32) NOT NULL,
        created_at CHAR(24) NOT NULL,
        expires_at CHAR(24) NOT NULL,
        used_at CHAR(24),
        KEY portal_refresh_session (session_id)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      'CREATE INDEX messages_client_status ON messages (client_id, status, queued_at)',
      'CREATE INDEX audit_type_actor ON audit_log (event_type, actor, created_at)',
      'CREATE INDEX audit_type_ip ON audit_log (event_type, ip, created_at)',
    ],
  },
]
