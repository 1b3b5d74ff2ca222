# The RocksDB state machine and snapshots (sm.h, snapshot.h); the formats
# they write and ship are kvsnapfile (src/snapfile).
add_library(kvsm STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sm.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_apply.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_batch.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_history.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_keys.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_session.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_lease.c
  ${CMAKE_CURRENT_LIST_DIR}/sm_txn.c
  ${CMAKE_CURRENT_LIST_DIR}/snapshot.c
  ${CMAKE_CURRENT_LIST_DIR}/snap_manifest.c
  ${CMAKE_CURRENT_LIST_DIR}/snap_restore.c
  ${CMAKE_CURRENT_LIST_DIR}/snap_ship.c)
target_link_libraries(kvsm PUBLIC kvfs kvproto kvsnapfile PkgConfig::ROCKSDB)
set_target_properties(kvsm PROPERTIES POSITION_INDEPENDENT_CODE ON)
