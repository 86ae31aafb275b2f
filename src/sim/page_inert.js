// The modules of WhatsApp Web features the simulator does not model: groups,
// newsletters (channels), statuses, polls, events, calls, stickers, labels,
// business catalogues, contacts' profile data. Spliced into page.js (where
// `/*__INERT_MODULES__*/` stands) when the page is served.
//
// Each module exists under its real name and has the members whatsapp-web.js
// 1.34.7 reads, so `window.require` never throws for a name the library
// uses. None of them pretends to work:
// - an action that would need WhatsApp's servers returns a promise that
//   rejects with `wasup sim: <feature> is not simulated`;
// - a synchronous helper that would need data the simulator does not have
//   throws the same error;
// - a lookup answers as an account without that data would: an empty
//   collection, an empty list, `false` for a feature gate.
//
// `lib` gives the page's own classes: {Collection}.
function inertModules(lib) {
  'use strict';
  const { Collection } = lib;

  const message = (feature) => 'wasup sim: ' + feature + ' is not simulated';
  /** An async action the simulator does not serve: always rejects. */
  const rejects = (feature) => function notSimulated() {
    return Promise.reject(new Error(message(feature)));
  };
  /** A synchronous helper that needs data the simulator does not have. */
  const throws = (feature) => function notSimulated() {
    throw new Error(message(feature));
  };
  /** The same for each name in `names`. */
  const each = (names, make) => Object.fromEntries(names.map((n) => [n, make]));
  /** A stored table with no rows (pins, poll votes). */
  const emptyTable = () => ({
    equals: () => Promise.resolve([]),
    anyOf: () => Promise.resolve([]),
    all: () => Promise.resolve([]),
  });

  const groups = 'groups';
  const newsletters = 'newsletters (channels)';

  return {
    // ----- groups ---------------------------------------------------------
    WAWebGroupCreateJob: { createGroup: rejects(groups) },
    WAWebGroupInviteJob: { joinGroupViaInvite: rejects(groups) },
    WAWebGroupInviteV4Job: { joinGroupViaInviteV4: rejects(groups) },
    WAWebGroupModifyInfoJob: each(['setGroupSubject', 'setGroupDescription'], rejects(groups)),
    WAWebGroupQueryJob: each(['queryGroupInvite', 'queryAndUpdateGroupMetadataById', 'resetGroupInviteCode'], rejects(groups)),
    WAWebMexFetchGroupInviteCodeJob: { fetchMexGroupInviteCode: rejects(groups) },
    WAWebModifyParticipantsGroupAction: each(['removeParticipants', 'promoteParticipants', 'demoteParticipants'], rejects(groups)),
    WAWebSetPropertyGroupAction: { setGroupProperty: rejects(groups) },
    WAWebExitGroupAction: { sendExitGroup: rejects(groups) },
    WAWebChatSendMessages: { sendGroupInviteMessage: rejects(groups) },
    WASmaxGroupsAddParticipantsRPC: { sendAddParticipantsRPC: rejects(groups) },
    WASmaxGroupsMembershipRequestsActionRPC: { sendMembershipRequestsActionRPC: rejects(groups) },
    WAWebApiMembershipApprovalRequestStore: { getMembershipApprovalRequests: rejects(groups) },
    // The account is in no group the simulator knows of.
    WAWebFindCommonGroupsContactAction: { findCommonGroups: () => Promise.resolve([]) },

    // ----- newsletters (channels) -----------------------------------------
    WAWebNewsletterCreateQueryJob: { createNewsletterQuery: rejects(newsletters) },
    WAWebNewsletterDeleteAction: { deleteNewsletterAction: rejects(newsletters) },
    WAWebNewsletterDemoteAdminJob: { demoteNewsletterAdminAction: rejects(newsletters) },
    WAWebNewsletterDirectorySearchAction: { fetchNewsletterDirectories: rejects(newsletters) },
    WAWebNewsletterMetadataQueryJob: { queryNewsletterMetadataByInviteCode: rejects(newsletters) },
    WAWebNewsletterSendMessageJob: { sendNewsletterMessageJob: rejects(newsletters) },
    WAWebNewsletterSendMsgAction: { sendNewsletterAdminInviteMessage: rejects(newsletters) },
    WAWebNewsletterSubscribeAction: { subscribeToNewsletterAction: rejects(newsletters) },
    WAWebNewsletterSubscriberListAction: { getSubscribersInContacts: rejects(newsletters) },
    WAWebNewsletterUnsubscribeAction: { unsubscribeFromNewsletterAction: rejects(newsletters) },
    WAWebNewsletterUpdateMsgsRecordsJob: each(['addNewsletterMsgsRecords', 'updateNewsletterMsgRecord'], rejects(newsletters)),
    WAWebNewsletterUpdateUserSettingJob: { updateNewsletterUserSetting: rejects(newsletters) },
    WAWebLoadNewsletterPreviewChatAction: { loadNewsletterPreviewChat: rejects(newsletters) },
    WAWebEditNewsletterMetadataAction: { editNewsletterMetadataAction: rejects(newsletters) },
    WAWebChangeNewsletterOwnerAction: { changeNewsletterOwnerAction: rejects(newsletters) },
    WAWebDemoteNewsletterAdminAction: { demoteNewsletterAdmin: rejects(newsletters) },
    WAWebMexAcceptNewsletterAdminInviteJob: { acceptNewsletterAdminInvite: rejects(newsletters) },
    WAWebMexRevokeNewsletterAdminInviteJob: { revokeNewsletterAdminInvite: rejects(newsletters) },
    WAWebMexFetchNewsletterSubscribersJob: { mexFetchNewsletterSubscribers: rejects(newsletters) },
    WAWebNewsletterGatingUtils: {
      isNewsletterCreationEnabled: () => false,
      getNewsletterDirectoryPageSize: () => 0,
      getMaxSubscriberNumber: () => 0,
    },
    WAWebNewsletterModelUtils: {
      ADMIN_NOTIFICATIONS: 'admin_notifications',
      MUTED_STATE: 'muted',
      UNMUTED_STATE: 'unmuted',
      getRoleByIdentifier: throws(newsletters),
    },
    WAJids: { toNewsletterJid: throws(newsletters) },
    WAWebCountriesNativeCountryNames: { countryCodesIso: {} },

    // ----- statuses, polls, events, reactions, pins, notes --------------------
    WAWebSendStatusMsgAction: each(['sendStatusTextMsgAction', 'sendStatusMediaMsgAction'], rejects('statuses')),
    WAWebRevokeStatusAction: { sendStatusRevokeMsgAction: rejects('statuses') },
    WAWebStatusGatingUtils: { canCheckStatusRankingPosterGating: () => false },
    WAWebPollsSendVoteMsgAction: { sendVote: rejects('polls') },
    WAWebPollsVotesSchema: { getTable: emptyTable },
    WAWebAddonPollVoteTableMode: { pollVoteTableMode: { bulkUpsert: () => Promise.resolve() } },
    WAWebSendEventEditMsgAction: { sendEventEditMessage: rejects('events') },
    WAWebSendEventResponseMsgAction: { sendEventResponseMsg: rejects('events') },
    WAWebGenerateEventCallLink: { createEventCallLink: rejects('event call links') },
    WAWebSendReactionMsgAction: { sendReactionToMsg: rejects('reactions') },
    WAWebAddonReactionTableMode: { reactionTableMode: { bulkUpsert: () => Promise.resolve() } },
    WAWebSendPinMessageAction: { sendPinInChatMsg: rejects('pinned messages') },
    WAWebPinInChatSchema: { getTable: emptyTable },
    WAWebPinMsgConstants: { getPinExpiryDuration: () => 7 * 24 * 3600 },
    WAWebNoteAction: each(['noteAddAction', 'retrieveOnlyNoteForChatJid'], rejects('contact notes')),
    WAWebBizGatingUtils: { smbNotesV1Enabled: () => false },

    // ----- editing, forwarding, replies, search, message info --------------------
    WAWebSendMessageEditAction: { sendMessageEdit: rejects('message edits') },
    WAWebChatForwardMessage: { forwardMessages: rejects('forwarding') },
    WAWebMsgReply: { canReplyMsg: throws('quoted replies') },
    WAWebQuotedMsgModelUtils: { getQuotedMsgObj: throws('quoted replies') },
    WAWebChatMessageSearch: { getSearchContext: rejects('message search') },
    WAWebApiMessageInfoStore: { queryMsgInfo: rejects('message info') },
    WAWebMsgActionCapability: each(['canSenderRevokeMsg', 'canAdminRevokeMsg', 'canStarMsg', 'canEditText', 'canEditCaption'], () => false),
    WAWebLinkPreviewChatAction: {
      // No link previews: the answer for a page that has none.
      getLinkPreview: () => Promise.resolve(null),
    },
    WAWebChatLoadMessages: {
      // History sync already brought everything the servers keep.
      loadEarlierMsgs: () => Promise.resolve([]),
    },
    WAWebChatClearBridge: { sendClear: rejects('clearing chats') },
    WAWebDeleteChatAction: { sendDelete: rejects('deleting chats') },
    WAWebNonMessageDataRequestPlaceholderMessageResendUtils: {
      // Every simulated message arrives decrypted: no placeholders to resend.
      handlePlaceholderMsgsSeen: () => Promise.resolve(),
    },
    WAWebSendNonMessageDataRequest: { sendPeerDataOperationRequest: rejects('peer data requests') },
    WAWebE2EProtoUtils: { typeAttributeFromProtobuf: throws('protobuf messages') },
    WAWebBackendJobsCommon: { mediaTypeFromProtobuf: throws('protobuf messages') },
    WADeprecatedSendIq: { deprecatedCastStanza: rejects('raw IQ stanzas') },
    WAWap: { wap: throws('raw IQ stanzas'), generateId: throws('raw IQ stanzas') },

    // ----- stickers, status and channel media (photos, videos, audio and
    // documents are simulated: see page.js) ----------------------------------
    WAWebUploadManager: { encryptAndUpload: rejects('stickers') },
    WAWebStartMediaUploadQpl: { startMediaUploadQpl: () => ({}) },
    WAWebMediaUpdateMsg: rejects('status media'),
    WAWebImageUtils: { toWebpSticker: rejects('stickers') },
    WAMediaCalculateFilehash: { getRandomFilehash: throws(newsletters) },
    WAWebContactProfilePicThumbBridge: each(['requestProfilePicFromServer', 'sendSetPicture', 'requestDeletePicture'], rejects('profile pictures')),

    // ----- contacts, blocking, vCards, business -------------------------------
    WAWebSaveContactAction: { saveContactAction: rejects('address book contacts') },
    WAWebDeleteContactAction: { deleteContactAction: rejects('address book contacts') },
    WAWebBlockContactAction: each(['blockContact', 'unblockContact'], rejects('blocking')),
    WAWebBlockContactUtils: { getContactToBlockOnlyUseIfNoAssociatedChat: throws('blocking') },
    WAWebContactStatusBridge: each(['setMyStatus', 'getStatus'], rejects('about texts')),
    WAWebSetPushnameConnAction: { setPushname: rejects('changing the push name') },
    WAWebFrontendVcardUtils: { vcardFromContactModel: throws('vCards') },
    WAWebVcardParsingUtils: { parseVcard: throws('vCards') },
    WAWebVcardGetNameFromParsed: { vcardGetNameFromParsed: throws('vCards') },
    WAWebBizOrderBridge: { queryOrder: rejects('business orders') },
    WAWebBizProductCatalogBridge: { queryProduct: rejects('business catalogues') },
    WAWebApiDeviceList: { getDeviceIds: rejects("contacts' device lists") },
    WAPhoneFindCC: { findCC: throws('country codes') },
    WAWebBotMessageSecret: { genBotMsgSecretFromMsgSecret: rejects('bots') },
    WAWebBotProfileCollection: { BotProfileCollection: new Collection() },

    // ----- calls -----------------------------------------------------------
    // A collection that never gets a call (whatsapp-web.js watches its Map).
    WAWebCallCollection: new Collection(),

    // ----- user interface (the simulated page has none) --------------------
    WAWebDrawerManager: { DrawerManager: { closeDrawerRight: () => undefined } },
    WAWebL10N: { getRegion: () => (navigator.language.split('-')[1] || 'US').toUpperCase() },
  };
}
